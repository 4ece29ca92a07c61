package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/presence-bridge/presence-bridge/poller/boltstore"
	"github.com/presence-bridge/presence-bridge/poller/functions"
	"github.com/presence-bridge/presence-bridge/servicebus"
)

// PortEnv is where the Functions host tells the custom handler its port.
const PortEnv = "FUNCTIONS_CUSTOMHANDLER_PORT"

// runFunctions is `presence-poller functions`: the same parts as serve
// behind the Azure Functions custom handler protocol (poller/functions).
// The timer function is the clock: there is no refresh loop of its own.
func runFunctions(ctx context.Context, args []string, env Env) int {
	fs := flag.NewFlagSet("functions", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	load := configFlag(fs, env)
	if err := fs.Parse(args); err != nil {
		return ExitUsage
	}
	cfg, path, ok := load()
	if !ok {
		return ExitUsage
	}
	port, err := strconv.Atoi(env.getenv(PortEnv))
	if err != nil || port < 0 || port > 65535 {
		fmt.Fprintf(env.Stderr, "presence-poller: %s is not set to a port: the Azure Functions host sets it when it starts the custom handler (deploy/functions/host.json); run serve outside Azure Functions\n", PortEnv)
		return ExitUsage
	}
	logger := newLogger(env.Stderr, cfg.LogLevel)
	if cfg.Storage.Tables == "" {
		logger.Warn("storage.tables is empty: the embedded store under data_dir serves one instance only; set storage.tables before Azure scales the app out")
	}
	d, err := NewDaemon(DaemonOptions{Config: cfg, Logger: logger, HTTPClient: env.HTTPClient})
	if err != nil {
		fmt.Fprintf(env.Stderr, "presence-poller: %v\n", err)
		if errors.Is(err, boltstore.ErrLocked) {
			return ExitFailure
		}
		return ExitUsage
	}
	fo := functions.Options{Engine: d.Engine, HTTP: d.Handler, Logger: logger.With("component", "functions")}
	var queue *servicebus.WorkQueue
	if cfg.ServiceBus.WorkQueue != "" {
		// The work queue lives in the first namespace; the deployment
		// creates it (sessions and duplicate detection on).
		queue, err = servicebus.NewWorkQueue(servicebus.WorkQueueOptions{ConnectionString: cfg.ServiceBus.Namespaces[0].ConnectionString.Value(), Queue: cfg.ServiceBus.WorkQueue})
		if err != nil {
			d.Store.Close()
			fmt.Fprintf(env.Stderr, "presence-poller: %v\n", err)
			return ExitUsage
		}
		fo.Queue = queue
	}
	logger.Info("presence poller starting as an Azure Functions custom handler", "version", or(env.Version, "dev"), "config", path,
		"port", port, "work_queue", cfg.ServiceBus.WorkQueue)
	err = d.serveFunctions(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), functions.New(fo), env.Ready)
	if queue != nil {
		stop, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = queue.Close(stop)
		cancel()
	}
	if err != nil {
		logger.Error("presence poller stopped", "err", err)
		return ExitFailure
	}
	logger.Info("presence poller stopped")
	return ExitOK
}

// serveFunctions serves the custom handler on addr until ctx ends, then
// lets invocations in progress finish within shutdownGrace.
func (d *Daemon) serveFunctions(ctx context.Context, addr string, h http.Handler, ready func(string)) error {
	defer d.Store.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	// No write timeout: a cycle answers when it is done, and the host's
	// functionTimeout bounds it.
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	d.log.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready(ln.Addr().String())
	}
	var runErr error
	select {
	case <-ctx.Done():
	case err := <-served:
		runErr = fmt.Errorf("http server: %w", err)
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	_ = srv.Shutdown(stopCtx)
	_ = d.publisher.Close(stopCtx)
	return runErr
}
