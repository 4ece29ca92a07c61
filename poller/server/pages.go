package server

import (
	"bytes"
	"html/template"
	"net/http"

	"gopkg.in/yaml.v3"

	"github.com/presence-bridge/presence-bridge/poller"
	"github.com/presence-bridge/presence-bridge/poller/signin"
)

const style = `<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em;line-height:1.5}
pre{background:#f4f4f4;padding:1em;overflow-x:auto}.warn{color:#8a4b00}a.button{display:inline-block;padding:.6em 1.2em;background:#2563eb;color:#fff;text-decoration:none;border-radius:4px}</style>`

var homePage = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Presence Bridge</title>` + style + `</head><body>
<h1>Presence Bridge</h1>
<p>Sign in once with your work account, and your Teams presence (Available, Busy, In a call…) reaches your home:
Home Assistant sensors and lamps that turn red while you are on a call.</p>
<p><a class="button" id="signin" href="/auth/start">Sign in with Microsoft</a></p>
</body></html>`))

var failPage = template.Must(template.New("fail").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign-in did not work</title>` + style + `</head><body>
<h1>Sign-in did not work</h1>
<p>{{.What}}</p>
{{with .Detail}}<p class="warn">Details: {{.}}</p>{{end}}
<p>{{.Todo}}</p>
<p><a class="button" href="/auth/start">Start again</a></p>
</body></html>`))

type failData struct{ What, Todo, Detail string }

func failView(e *signin.Error) failData {
	d := failData{Detail: e.Detail}
	switch e.Failure {
	case signin.FailEntra:
		d.What = "Microsoft did not complete the sign-in."
		d.Todo = "If you cancelled, start again when you are ready. If your organisation requires an administrator's approval, ask your IT administrator to grant consent to this app."
	case signin.FailNoCookie:
		d.What = "This browser did not bring back the sign-in cookie."
		d.Todo = "Start the sign-in here again in the same browser, and allow cookies for this site."
	case signin.FailForged:
		d.What = "The sign-in could not be verified."
		d.Todo = "Start again from this site's sign-in link (not from a bookmark of Microsoft's page)."
	case signin.FailExpired:
		d.What = "The sign-in took longer than 10 minutes."
		d.Todo = "Start again and finish within 10 minutes."
	case signin.FailState:
		d.What = "The answer from Microsoft does not belong to the sign-in this browser started."
		d.Todo = "Start again from this site's sign-in link, in one tab only."
	case signin.FailNoCode:
		d.What = "Microsoft's answer carried no sign-in code."
		d.Todo = "Start again."
	case signin.FailRedeem:
		d.What = "Microsoft refused the sign-in code (it may have been used already, or it expired)."
		d.Todo = "Start again: each sign-in link works once."
	case signin.FailNonce:
		d.What = "Microsoft's answer was not issued for this sign-in."
		d.Todo = "Start again from this site's sign-in link."
	case signin.FailIDToken:
		d.What = "Microsoft's answer did not say who you are."
		d.Todo = "Start again; if it keeps happening, the app registration may be misconfigured."
	case signin.FailUnavailable:
		d.What = "A service this sign-in needs could not be reached."
		d.Todo = "Wait a minute and start again."
	default:
		d.What = "Something went wrong on our side."
		d.Todo = "Wait a minute and start again; if it keeps happening, tell whoever runs this service."
	}
	return d
}

var donePage = template.Must(template.New("done").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in</title>` + style + `</head><body>
<h1>Signed in{{with .Name}} as {{.}}{{end}}</h1>
<p>Your Teams presence now goes to the Service Bus topic <code>{{.Topic}}</code>{{if .Published}}; your current presence is already there{{end}}.</p>
{{if .Manual}}<p class="warn">This service may not create Service Bus entities (its key lacks Manage rights).
Create them by hand in the Azure portal, in the namespace <code>{{.Manual.Host}}</code>: a topic named <code>{{.Manual.Topic}}</code>
(duplicate detection on, message time to live 1 hour){{range .Manual.Subscriptions}}, a subscription <code>{{.}}</code> on it{{end}},
and a shared access policy with the Listen claim on the topic for your bridge.</p>{{end}}
<h2>For your home bridge</h2>
<p>Add this entry under <code>users:</code> in <code>presence-bridge.yaml</code> (or the add-on's options):</p>
<pre id="users-entry">{{.Entry}}</pre>
{{if .Secret}}<p class="warn">The connection string above is a key that reads your presence topic. It is shown <strong>only this once</strong>:
copy it now. Signing in again makes a new one and the old one stops working.</p>{{else if not .Manual}}<p>Read the topic with your namespace's Listen connection string (<code>service_bus.connection_string</code>).</p>{{end}}
</body></html>`))

type doneData struct {
	Name, Topic, Entry string
	Secret, Published  bool
	Manual             any
}

func doneView(a poller.Account, ob poller.Onboarding, published bool) doneData {
	type user struct {
		ID               string `yaml:"id"`
		Name             string `yaml:"name"`
		Topic            string `yaml:"topic,omitempty"`
		ConnectionString string `yaml:"connection_string,omitempty"`
	}
	name := a.Name
	if name == "" {
		name = a.UPN
	}
	u := user{ID: string(a.UserID), Name: name, ConnectionString: ob.ListenConnectionString}
	if ob.Topic != string(a.UserID) {
		u.Topic = ob.Topic
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	_ = enc.Encode([]user{u})
	d := doneData{Name: a.Name, Topic: ob.Topic, Entry: b.String(), Secret: ob.ListenConnectionString != "", Published: published}
	if ob.Manual != nil {
		d.Manual = ob.Manual
	}
	return d
}

func render(w http.ResponseWriter, status int, t *template.Template, data any) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		http.Error(w, "page error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
