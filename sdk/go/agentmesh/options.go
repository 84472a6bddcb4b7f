package agentmesh

import (
	"io"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

// The contract environment variables a sidecar gives the agents it starts.
const (
	EnvSidecarAddress = "AGENTMESH_SIDECAR_ADDR"
	EnvInstanceID     = "AGENTMESH_INSTANCE_ID"
)

// Defaults, the same as the TypeScript SDK's.
const (
	DefaultOrphanTimeout   = 15 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultCallTimeout     = 30 * time.Second
	// DefaultMaxInFlight bounds the calls one Caller has open at once.
	DefaultMaxInFlight = 1024
)

// Option configures an Agent or a Caller.
type Option func(*config)

type config struct {
	sidecarAddress  string
	instanceID      string
	manifest        *agentmeshv1.AgentManifest
	orphanTimeout   time.Duration
	shutdownTimeout time.Duration
	callTimeout     time.Duration
	maxInFlight     int
	backoff         backoffPolicy
	logger          *slog.Logger
	dialOptions     []grpc.DialOption
}

func newConfig(options []Option) config {
	settings := config{
		sidecarAddress:  os.Getenv(EnvSidecarAddress),
		instanceID:      os.Getenv(EnvInstanceID),
		orphanTimeout:   DefaultOrphanTimeout,
		shutdownTimeout: DefaultShutdownTimeout,
		callTimeout:     DefaultCallTimeout,
		maxInFlight:     DefaultMaxInFlight,
		backoff:         backoffPolicy{initial: 50 * time.Millisecond, max: 2 * time.Second, multiplier: 2, jitter: 0.2},
		logger:          slog.Default(),
	}
	for _, option := range options {
		option(&settings)
	}
	return settings
}

// WithSidecarAddress sets the sidecar's local address (default: $AGENTMESH_SIDECAR_ADDR).
func WithSidecarAddress(address string) Option {
	return func(settings *config) { settings.sidecarAddress = address }
}

// WithInstanceID sets which local instance the agent serves (default: $AGENTMESH_INSTANCE_ID).
func WithInstanceID(instanceID string) Option {
	return func(settings *config) { settings.instanceID = instanceID }
}

// WithManifest makes an agent the sidecar did not start register itself as an
// unmanaged instance: the sidecar registers the manifest when the agent attaches.
// Without WithInstanceID (or the environment) it gets an instance id of its own.
func WithManifest(manifest *agentmeshv1.AgentManifest) Option {
	return func(settings *config) { settings.manifest = manifest }
}

// WithOrphanTimeout sets how long an agent runs without its sidecar (it died,
// or no longer knows the instance) before Run returns ErrOrphaned, so a
// SIGKILLed sidecar leaves no agents behind. Default 15 s; 0 waits forever.
func WithOrphanTimeout(timeout time.Duration) Option {
	return func(settings *config) { settings.orphanTimeout = timeout }
}

// WithShutdownTimeout bounds how long Run waits, once its context is done, for
// calls in flight to finish before it cancels them. Default 30 s.
func WithShutdownTimeout(timeout time.Duration) Option {
	return func(settings *config) { settings.shutdownTimeout = timeout }
}

// WithCallTimeout is a Caller's deadline for calls whose context has none. Default 30 s.
func WithCallTimeout(timeout time.Duration) Option {
	return func(settings *config) { settings.callTimeout = timeout }
}

// WithMaxInFlight bounds a Caller's calls in flight; beyond it calls fail with
// ErrResourceExhausted at once. Default 1024.
func WithMaxInFlight(calls int) Option {
	return func(settings *config) { settings.maxInFlight = calls }
}

// WithReconnectBackoff sets the first and the longest delay between attempts to
// reopen a broken stream to the sidecar (exponential, jittered). Default 50 ms to 2 s.
func WithReconnectBackoff(initial, max time.Duration) Option {
	return func(settings *config) {
		settings.backoff.initial = initial
		settings.backoff.max = max
	}
}

// WithLogger sets where the SDK logs handler failures and reconnects (default slog.Default()).
func WithLogger(logger *slog.Logger) Option {
	return func(settings *config) {
		if logger == nil {
			logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		settings.logger = logger
	}
}

// WithDialOptions adds gRPC dial options for the connection to the sidecar.
func WithDialOptions(options ...grpc.DialOption) Option {
	return func(settings *config) { settings.dialOptions = append(settings.dialOptions, options...) }
}

// InvokeOption configures one call.
type InvokeOption func(*invokeSettings)

type invokeSettings struct {
	versionRange  string
	labelSelector *agentmeshv1.LabelSelector
	selectorError error
	idempotent    bool
	contentType   string
	metadata      map[string]string
}

func newInvokeSettings(options []InvokeOption) invokeSettings {
	var settings invokeSettings
	for _, option := range options {
		option(&settings)
	}
	return settings
}

// WithVersionRange restricts the call to capability versions in an npm-style
// semver range (`^2.1.0`, `>=1.4 <3`, `2.x`).
func WithVersionRange(versionRange string) InvokeOption {
	return func(settings *invokeSettings) { settings.versionRange = versionRange }
}

// WithLabelSelector restricts the call to instances whose labels match.
func WithLabelSelector(selector *agentmeshv1.LabelSelector) InvokeOption {
	return func(settings *invokeSettings) { settings.labelSelector = selector }
}

// WithSelector is WithLabelSelector in the compact syntax of ParseLabelSelector:
// `env=prod,tier in (a|b),!canary,gpu`.
func WithSelector(selector string) InvokeOption {
	return func(settings *invokeSettings) {
		parsed, err := ParseLabelSelector(selector)
		settings.labelSelector, settings.selectorError = parsed, err
	}
}

// WithIdempotent marks the call safe to retry on another instance when the first is unavailable.
func WithIdempotent() InvokeOption {
	return func(settings *invokeSettings) { settings.idempotent = true }
}

// WithContentType names the payload's media type (passed to the agent as is).
func WithContentType(contentType string) InvokeOption {
	return func(settings *invokeSettings) { settings.contentType = contentType }
}

// WithMetadata adds key/value metadata passed to the agent (for example `traceparent`).
func WithMetadata(metadata map[string]string) InvokeOption {
	return func(settings *invokeSettings) {
		if settings.metadata == nil {
			settings.metadata = map[string]string{}
		}
		for key, value := range metadata {
			settings.metadata[key] = value
		}
	}
}
