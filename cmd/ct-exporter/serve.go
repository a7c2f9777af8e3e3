package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/alecthomas/units"
	"github.com/prometheus/client_golang/prometheus"
	promcollectors "github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	"go.uber.org/zap"

	"github.com/ct-exporter/ct-exporter/collector"
	"github.com/ct-exporter/ct-exporter/events"
	"github.com/ct-exporter/ct-exporter/internal/caps"
	"github.com/ct-exporter/ct-exporter/internal/exposition"
	"github.com/ct-exporter/ct-exporter/internal/logging"
	"github.com/ct-exporter/ct-exporter/internal/pathwatch"
	"github.com/ct-exporter/ct-exporter/internal/preflight"
	"github.com/ct-exporter/ct-exporter/internal/tablescan"
	"github.com/ct-exporter/ct-exporter/internal/topk"
	"github.com/ct-exporter/ct-exporter/internal/watch"
)

// defaultListenAddress is the exporter's default port.
const defaultListenAddress = ":9549"

// serveCommand holds the flags of the serve subcommand.
type serveCommand struct {
	cmd                    *kingpin.CmdClause
	common                 *commonFlags
	webFlags               *web.FlagConfig
	telemetryPath          string
	disableExporterMetrics bool
	maxRequests            int
	scrapeTimeout          time.Duration
	settingsInterval       time.Duration
	namespaces             *namespaceFlags
	table                  tableFlags
	events                 eventsFlags
	enablePprof            bool
}

// eventsFlags configure the DESTROY-event subscribers.
type eventsFlags struct {
	bufferSize       units.Base2Bytes
	flowTableSize    int
	enableTimestamps bool
	topWindow        time.Duration
	topK             int
}

// maxEventsTopK is the largest --events.top-k: each named series is one
// label value per namespace.
const maxEventsTopK = 100

// maxEventsBuffer is the largest receive buffer the kernel applies.
const maxEventsBuffer = units.GiB

// validate rejects values the subscribers cannot use.
func (f eventsFlags) validate() error {
	switch {
	case f.bufferSize <= 0 || f.bufferSize > maxEventsBuffer:
		return fmt.Errorf("--events.buffer-size=%s must be more than 0 and at most %s", f.bufferSize, maxEventsBuffer)
	case f.flowTableSize <= 0:
		return fmt.Errorf("--events.flow-table-size=%d must be positive", f.flowTableSize)
	case f.topWindow <= 0:
		return fmt.Errorf("--events.top-window=%s must be positive", f.topWindow)
	case f.topK < 0 || f.topK > maxEventsTopK:
		return fmt.Errorf("--events.top-k=%d must be between 0 and %d", f.topK, maxEventsTopK)
	}
	return flagError(f.topWindowOptions().Validate())
}

// topWindowOptions are the options of each subscriber's sliding window.
func (f eventsFlags) topWindowOptions() topk.WindowOptions {
	return topk.WindowOptions{Window: f.topWindow}
}

// tableFlags configure the background table scan.
type tableFlags struct {
	interval   time.Duration
	timeout    time.Duration
	topK       int
	byZoneMark bool
}

// validate rejects values the table scan cannot use.
func (f tableFlags) validate() error {
	switch {
	case f.interval < 0:
		return fmt.Errorf("--table.interval=%s must not be negative", f.interval)
	case f.timeout <= 0:
		return fmt.Errorf("--table.timeout=%s must be positive", f.timeout)
	case f.topK < 0:
		return fmt.Errorf("--table.top-k=%d must not be negative", f.topK)
	}
	return nil
}

func newServeCommand(app *kingpin.Application, common *commonFlags) *serveCommand {
	s := &serveCommand{common: common}
	s.cmd = app.Command("serve", "Serve metrics over HTTP (the default).").Default()
	s.webFlags = kingpinflag.AddFlags(s.cmd, defaultListenAddress)
	s.cmd.Flag("web.telemetry-path", "Path under which to expose metrics.").
		Default("/metrics").StringVar(&s.telemetryPath)
	s.cmd.Flag("web.disable-exporter-metrics", "Leave out the exporter's own go_* and process_* metrics.").
		BoolVar(&s.disableExporterMetrics)
	s.cmd.Flag("web.max-requests", "Maximum concurrent scrapes; 0 means no limit.").
		Default("40").IntVar(&s.maxRequests)
	s.cmd.Flag("collector.timeout", "Time limit of one collector for one namespace on a scrape.").
		Default("10s").DurationVar(&s.scrapeTimeout)
	s.cmd.Flag("collector.settings-interval", "Time between two readings of each namespace's sysctls (the first when the namespace is watched); scrapes serve the last reading, conntrack_exporter_settings_age_seconds says how old it is.").
		Default(watch.DefaultSettingsInterval.String()).DurationVar(&s.settingsInterval)
	s.namespaces = addNamespaceFlags(s.cmd)
	s.cmd.Flag("table.interval", "Time between two scans of each namespace's conntrack table (the first runs at startup); scrapes serve the last scan. 0 disables the table breakdown.").
		Default("60s").DurationVar(&s.table.interval)
	s.cmd.Flag("table.timeout", "Time limit of one table scan.").
		Default("50s").DurationVar(&s.table.timeout)
	s.cmd.Flag("table.top-k", "Top sources and destination ports (and zones and marks) named in the table breakdown, plus one \"other\" series with the rest; 0 leaves out these series.").
		Default(strconv.Itoa(tablescan.DefaultTopK)).IntVar(&s.table.topK)
	s.cmd.Flag("table.by-zone-mark", "Also break the table down by conntrack zone and by mark (top K each).").
		BoolVar(&s.table.byZoneMark)
	s.cmd.Flag("events.buffer-size", "Receive buffer of each namespace's conntrack event socket, forced with SO_RCVBUFFORCE (the kernel doubles it); the default holds a burst of 200k DESTROY events.").
		Default(units.Base2Bytes(events.DefaultBufferSize).String()).BytesVar(&s.events.bufferSize)
	s.cmd.Flag("events.flow-table-size", "Flows whose start is remembered per namespace when nf_conntrack_timestamp is 0 (the flow_table lifetime mode); the oldest is evicted when full.").
		Default(strconv.Itoa(events.DefaultFlowTableSize)).IntVar(&s.events.flowTableSize)
	s.cmd.Flag("conntrack.enable-timestamps", "Set net.netfilter.nf_conntrack_timestamp=1 in every watched namespace, so flow lifetimes come from kernel timestamps (see docs/EVENTS.md). Off: no sysctl is changed.").
		BoolVar(&s.events.enableTimestamps)
	s.cmd.Flag("events.top-window", "Sliding window of the top sources of flow ends and top destinations of silent ends; it moves in steps of a fifth of it, at most 1m, and holds a whole number of steps, at most 60.").
		Default(topk.DefaultWindow.String()).DurationVar(&s.events.topWindow)
	s.cmd.Flag("events.top-k", "Top sources of flow ends and destinations of silent ends named per namespace, plus one \"other\" series with the rest; 0 leaves out these series.").
		Default(strconv.Itoa(topk.DefaultK)).IntVar(&s.events.topK)
	addPprofFlag(s.cmd, &s.enablePprof)
	return s
}

// run starts the daemon and blocks until SIGINT or SIGTERM.
func (s *serveCommand) run(_ io.Writer, stderr io.Writer) int {
	logger, err := logging.New(s.common.logLevel, s.common.logFormat, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v\n", flagError(err))
		return exitUsage
	}
	defer logger.Sync() //nolint:errcheck // stderr may not support sync
	if !strings.HasPrefix(s.telemetryPath, "/") {
		fmt.Fprintf(stderr, "ct-exporter: error: --web.telemetry-path=%q must start with /\n", s.telemetryPath)
		return exitUsage
	}
	if err := s.table.validate(); err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v\n", err)
		return exitUsage
	}
	if s.settingsInterval <= 0 {
		fmt.Fprintf(stderr, "ct-exporter: error: --collector.settings-interval=%s must be positive\n", s.settingsInterval)
		return exitUsage
	}
	if err := s.events.validate(); err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v\n", err)
		return exitUsage
	}
	targets, err := s.namespaces.staticTargets(s.common.netns)
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v\n", err)
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if raised, err := caps.RaiseNetAdmin(); err != nil {
		logger.Warn("could not raise CAP_NET_ADMIN from the permitted set", zap.Error(err))
	} else if raised {
		logger.Debug("raised CAP_NET_ADMIN from the permitted set")
	}
	checkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = preflight.Check(checkCtx, checkTargets(targets))
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: %v\n", flagError(err))
		return exitFailure
	}

	// What runs per namespace (package watch), and the collectors that
	// read it.
	// Statistics through one socket per namespace, opened when it is
	// watched, whose path is looked at again only after inotify named it;
	// settings read in the background, not on each scrape.
	paths := pathwatch.New()
	if err := paths.Err(); err != nil {
		logger.Warn("cannot watch namespace paths; each scrape checks every path with stat(2)", zap.Error(err))
	}
	defer paths.Close()
	statsSockets := watch.NewStatsSockets(paths)
	stats := watch.NewStatsTotals(statsSockets)
	settings := watch.NewSettings(watch.SettingsOptions{
		Interval: s.settingsInterval,
		Timeout:  s.scrapeTimeout,
		Logger:   logger.With(zap.String("collector", "settings")),
	})
	subscribers := watch.NewSubscribers(watch.SubscriberStarter(events.Config{
		BufferSize:       int(s.events.bufferSize),
		FlowTableSize:    s.events.flowTableSize,
		EnableTimestamps: s.events.enableTimestamps,
		TopWindow:        s.events.topWindowOptions(),
		Logger:           logger.With(zap.String("collector", collector.EventsName)),
	}), collector.NewLifetimeSink)
	collectors := map[string]collector.Collector{
		"stats":              collector.NewStatsCollector(stats),
		"settings":           collector.NewSettingsCollector(settings),
		collector.EventsName: collector.NewEventsCollector(subscribers, s.events.topK),
	}
	watchers := map[string]watch.Watcher{collector.EventsName: subscribers, "settings": settings, "stats": statsSockets}
	if s.table.interval > 0 {
		scans := watch.NewTableScans(watch.TableScanOptions{
			Interval: s.table.interval,
			Timeout:  s.table.timeout,
			Scan:     tablescan.Options{TopK: s.table.topK, ByZoneMark: s.table.byZoneMark},
			Logger:   logger.With(zap.String("collector", collector.TableName)),
		})
		collectors[collector.TableName] = collector.NewTableCollector(scans)
		watchers[collector.TableName] = scans
	}

	// The static targets, then discovered ones: each namespace is watched
	// by every watcher and forgotten by every one when it goes.
	namespaces, err := s.namespaces.namespaceSet(targets, watchers, []watch.Forgetter{stats}, logger)
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: %v\n", err)
		return exitFailure
	}
	if err := namespaces.Start(ctx); err != nil {
		fmt.Fprintf(stderr, "ct-exporter: %v\n", flagError(err))
		return exitFailure
	}
	defer namespaces.Close()

	exporter := collector.NewExporter(collectors, namespaces.Targets, s.scrapeTimeout, logger)
	// The conntrack metrics, thousands with many namespaces, are written
	// by package exposition; the exporter's own process metrics go
	// through a registry.
	rest := prometheus.NewRegistry()
	rest.MustRegister(versioncollector.NewCollector("conntrack_exporter"))
	if !s.disableExporterMetrics {
		rest.MustRegister(promcollectors.NewGoCollector(), promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{}))
	}
	metrics, err := exposition.NewHandler(rest, exposition.HandlerOpts{
		ErrorLog:            zap.NewStdLog(logger),
		MaxRequestsInFlight: s.maxRequests,
	}, collector.Guard(exporter, namespaces), collector.NewNetnsCollector(namespaces.Status))
	if err != nil {
		fmt.Fprintf(stderr, "ct-exporter: error: %v\n", err)
		return exitFailure
	}

	mux := http.NewServeMux()
	mux.Handle(s.telemetryPath, metrics)
	ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "OK") }
	mux.HandleFunc("/-/healthy", ok)
	mux.HandleFunc("/-/ready", ok)
	if s.enablePprof {
		handlePprof(mux)
	}
	if s.telemetryPath != "/" {
		landing, err := web.NewLandingPage(web.LandingConfig{
			Name:        "ct-exporter",
			Description: "Prometheus exporter for the Linux netfilter connection tracking table",
			Version:     version.Info(),
			Links: []web.LandingLinks{
				{Address: s.telemetryPath, Text: "Metrics"},
				{Address: "/-/healthy", Text: "Health"},
			},
		})
		if err != nil {
			fmt.Fprintf(stderr, "ct-exporter: error: landing page: %v\n", err)
			return exitFailure
		}
		mux.Handle("/", landing)
	}

	names := make([]string, 0, len(targets))
	for _, t := range targets {
		names = append(names, t.String())
	}
	logger.Info("starting ct-exporter", zap.String("version", version.Info()), zap.Strings("netns", names))

	server := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(server, s.webFlags, logging.Slog(logger)) }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintf(stderr, "ct-exporter: error: %v\n", err)
			return exitFailure
		}
	case <-ctx.Done():
		logger.Info("shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := server.Shutdown(shutdownCtx); err != nil {
			logger.Warn("shutdown", zap.Error(err))
		}
	}
	return exitOK
}
