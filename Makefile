# Presence Bridge. `make demo` shows it working; `make test` runs every test.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)
BIN      := bin/presence-bridge
POLLER   := bin/presence-poller

.PHONY: build test test-short bench lint demo demo-system cross images package-functions clean

# Both programs: the home bridge and the cloud poller.
build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/presence-bridge
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(POLLER) ./cmd/presence-poller

# Every test, the integration ones (real mosquitto, the Service Bus stand-in) included.
test:
	$(GO) test -race -count=1 -timeout 12m ./...

# Only what needs nothing external.
test-short:
	$(GO) test -short -count=1 ./...

# Go benchmarks and the end-to-end load runs (testing.B benchmarks), and the
# synctest simulations named TestSimulated* (counts over simulated hours,
# which a testing.B cannot run under synctest).
bench:
	$(GO) test -run '^TestSimulated' -bench . -benchmem -timeout 60m ./...

# actionlint checks the GitHub workflows (their shell steps too when
# shellcheck is installed, as .ci/run and GitHub's runners do).
lint:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) tool staticcheck ./...
	$(GO) tool actionlint

demo:
	$(GO) run ./cmd/presence-demo

# The whole system: sign in on a page, the real poller and the home side.
demo-system:
	$(GO) run ./cmd/presence-demo -system

# Static binaries of the bridge for the three image platforms (the poller
# runs in the cloud: make build, or go build ./cmd/presence-poller).
cross:
	@for p in linux/amd64 linux/arm64 linux/arm/v7; do \
		os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=""; \
		case $$rest in arm/v7) arm=7;; esac; \
		out=dist/presence-bridge-$$os-$$arch$${arm:+v$$arm}; \
		echo "building $$out"; \
		CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $$out ./cmd/presence-bridge || exit 1; \
	done

# The Azure Functions package (deploy/functions plus a static linux/amd64
# presence-poller) for zip deploy: az functionapp deployment source
# config-zip, or func azure functionapp publish from dist/functions.
package-functions:
	rm -rf dist/functions dist/presence-poller-functions.zip
	mkdir -p dist/functions
	cp -R deploy/functions/. dist/functions/
	CGO_ENABLED=0 GOOS=linux GOARCH=amd64 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/functions/presence-poller ./cmd/presence-poller
	$(GO) run ./internal/tools/zipdir -o dist/presence-poller-functions.zip dist/functions
	@echo "dist/presence-poller-functions.zip"

# The multi-arch image (needs a Docker engine with buildx; none runs on CI).
images:
	docker buildx build --platform linux/amd64,linux/arm64,linux/arm/v7 --build-arg BUILD_VERSION=$(VERSION) -t presence-bridge:$(VERSION) .

clean:
	rm -rf bin dist
