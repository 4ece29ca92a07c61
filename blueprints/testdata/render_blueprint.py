"""Runs an automation blueprint's templates with Jinja2, for blueprint_test.go.

Home Assistant renders templates with Jinja2's immutable sandbox plus its own
functions. This script does what an automation built from the blueprint does
when a trigger fires, for each case it is given, with:

- the blueprint read by a YAML 1.1 loader (as Home Assistant's) that knows
  the !input tag; every !input replaced by the case's input or the input's
  default (an undeclared input or one with no value is an error);
- the automation's variables rendered in order, each seeing the earlier ones,
  strings as templates and the results parsed back into numbers, lists and
  dicts the way Home Assistant does;
- the functions the templates use, over the case's states and device
  registry: states, state_attr, is_state, device_id, device_entities;
- the actions run: choose with template conditions (first match wins, then
  default), and each action call recorded with its rendered target and data.

Undefined names are errors here (Home Assistant would log and render them
empty), so a misspelt variable fails the test.

Input (stdin, JSON): {"blueprint": path, "cases": [{"name", "inputs",
"states": {entity_id: {"state", "attributes"}}, "devices": {entity_id:
device_id}}]}. Output (stdout, JSON): one object per case with "name",
"variables" (the rendered ones named in "report"), "calls" and "error".
"""

import ast
import json
import re
import sys

import jinja2
import jinja2.sandbox
import yaml


class Input:
    def __init__(self, name):
        self.name = name


class Loader(yaml.SafeLoader):
    pass


def _input(loader, node):
    return Input(loader.construct_scalar(node))


Loader.add_constructor("!input", _input)


def declared_inputs(blueprint):
    """Input name -> declaration, sections flattened."""
    out = {}
    for name, decl in (blueprint["blueprint"].get("input") or {}).items():
        if decl and "input" in decl:
            out.update({k: v or {} for k, v in decl["input"].items()})
        else:
            out[name] = decl or {}
    return out


def substitute(node, values):
    if isinstance(node, Input):
        if node.name not in values:
            raise KeyError("!input %s: not declared or no value" % node.name)
        return values[node.name]
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    if isinstance(node, dict):
        return {k: substitute(v, values) for k, v in node.items()}
    return node


_NUMERIC = re.compile(r"^[+-]?(?!0\d)\d*(?:\.\d*)?$")


def parse_result(text):
    """Home Assistant's reading of a rendered template."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError):
        return text
    if isinstance(value, (str, complex)):
        return text
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if _NUMERIC.match(text) is None:
            return text
    return value


# One sandbox for every case; each render gets the case's functions.
_ENV = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
_COMPILED = {}


def _compile(text):
    if text not in _COMPILED:
        _COMPILED[text] = _ENV.from_string(text)
    return _COMPILED[text]


class Home:
    """The states and device registry a case describes."""

    def __init__(self, case):
        self.states = case.get("states") or {}
        self.devices = case.get("devices") or {}
        self.functions = {
            "states": self.state,
            "state_attr": self.state_attr,
            "is_state": lambda e, s: self.state(e) == s,
            "device_id": lambda e: self.devices.get(e),
            "device_entities": lambda d: [e for e, dev in self.devices.items() if dev == d],
        }

    def state(self, entity_id):
        st = self.states.get(entity_id)
        return "unknown" if st is None else st["state"]

    def state_attr(self, entity_id, name):
        st = self.states.get(entity_id)
        return None if st is None else (st.get("attributes") or {}).get(name)

    def render(self, text, variables, parse=True):
        out = _compile(text).render(**self.functions, **variables).strip()
        return parse_result(out) if parse else out

    def render_complex(self, node, variables):
        if isinstance(node, str):
            return self.render(node, variables)
        if isinstance(node, list):
            return [self.render_complex(v, variables) for v in node]
        if isinstance(node, dict):
            return {
                self.render_complex(k, variables): self.render_complex(v, variables)
                for k, v in node.items()
            }
        return node

    def condition(self, cond, variables):
        if isinstance(cond, str):
            return self.render(cond, variables, parse=False).lower() == "true"
        if isinstance(cond, list):
            return all(self.condition(c, variables) for c in cond)
        if isinstance(cond, dict) and cond.get("condition") == "template":
            return self.condition(cond["value_template"], variables)
        raise ValueError("unsupported condition %r" % (cond,))

    def run(self, actions, variables, calls):
        for step in actions:
            if "choose" in step:
                for option in step["choose"]:
                    if self.condition(option.get("conditions", []), variables):
                        self.run(option["sequence"], variables, calls)
                        break
                else:
                    self.run(step.get("default", []), variables, calls)
            elif "action" in step:
                calls.append({
                    "action": step["action"],
                    "target": self.render_complex(step.get("target", {}), variables),
                    "data": self.render_complex(step.get("data", {}), variables),
                })
            else:
                raise ValueError("unsupported action %r" % (step,))


def run_case(blueprint, case):
    decls = declared_inputs(blueprint)
    values = {k: d["default"] for k, d in decls.items() if "default" in d}
    for k, v in (case.get("inputs") or {}).items():
        if k not in decls:
            raise KeyError("case input %s is not declared" % k)
        values[k] = v
    body = substitute({k: v for k, v in blueprint.items() if k != "blueprint"}, values)
    home = Home(case)
    variables = {"trigger": {"platform": "state"}}
    for name, node in (body.get("variables") or {}).items():
        variables[name] = home.render_complex(node, variables)
    calls = []
    home.run(body.get("actions") or [], variables, calls)
    report = case.get("report") or []
    return {"variables": {k: variables.get(k) for k in report}, "calls": calls}


def main():
    req = json.load(sys.stdin)
    with open(req["blueprint"], encoding="utf-8") as f:
        blueprint = yaml.load(f, Loader=Loader)
    results = []
    for case in req["cases"]:
        try:
            out = run_case(blueprint, case)
            out["error"] = ""
        except Exception as err:  # reported per case, the test fails on it
            out = {"variables": {}, "calls": [], "error": "%s: %s" % (type(err).__name__, err)}
        out["name"] = case.get("name", "")
        results.append(out)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
