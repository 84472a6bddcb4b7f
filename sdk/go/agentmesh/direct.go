package agentmesh

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

// DirectClient calls the mesh without a sidecar: over mTLS to the control
// plane, whose OrchestratorService.Invoke resolves an instance and forwards
// the call, signed with the server's key, to that instance's sidecar.
//
// After each certificate renewal it dials a new connection with the new
// certificate and closes the old one once its calls have finished, so no call
// rides a certificate about to expire, whatever the server's connection ageing.
type DirectClient struct {
	identity    *Identity
	address     string
	options     []grpc.DialOption
	callTimeout time.Duration
	mu          sync.Mutex
	current     *serverConn
	closed      chan struct{}
	watcherDone chan struct{}
}

// serverConn is one connection and the calls using it.
type serverConn struct {
	conn         *grpc.ClientConn
	orchestrator agentmeshv1.OrchestratorServiceClient
	registry     agentmeshv1.RegistryServiceClient
	calls        sync.WaitGroup
}

// DialServer connects to the control plane at address with identity's
// certificate, accepting only a server of the identity's trust domain.
func DialServer(identity *Identity, address string, options ...grpc.DialOption) (*DirectClient, error) {
	base := []grpc.DialOption{
		grpc.WithTransportCredentials(identity.TransportCredentials("server")),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	client := &DirectClient{
		identity:    identity,
		address:     address,
		options:     append(append(base, identity.config.DialOptions...), options...),
		callTimeout: DefaultCallTimeout,
		closed:      make(chan struct{}),
		watcherDone: make(chan struct{}),
	}
	current, err := client.dial()
	if err != nil {
		return nil, err
	}
	client.current = current
	go client.followRenewals()
	return client, nil
}

func (c *DirectClient) dial() (*serverConn, error) {
	conn, err := grpc.NewClient(c.address, c.options...)
	if err != nil {
		return nil, &Error{Code: codes.InvalidArgument, Message: "server address " + c.address + ": " + err.Error()}
	}
	return &serverConn{conn: conn, orchestrator: agentmeshv1.NewOrchestratorServiceClient(conn), registry: agentmeshv1.NewRegistryServiceClient(conn)}, nil
}

func (c *DirectClient) followRenewals() {
	defer close(c.watcherDone)
	for {
		select {
		case <-c.closed:
			return
		case <-c.identity.Renewed():
		}
		next, err := c.dial()
		if err != nil {
			c.identity.log.Warn("redial after renewal failed", "err", err)
			continue
		}
		c.mu.Lock()
		previous := c.current
		c.current = next
		c.mu.Unlock()
		go func() {
			previous.calls.Wait()
			previous.conn.Close()
		}()
	}
}

// acquire returns the current connection, counted as in use until release.
func (c *DirectClient) acquire() (*serverConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == nil {
		return nil, &Error{Code: codes.Unavailable, Message: "client closed"}
	}
	c.current.calls.Add(1)
	return c.current, nil
}

// Conn is the current mTLS connection, for the generated clients of the other
// services; after a renewal it is replaced, and closed once idle.
func (c *DirectClient) Conn() *grpc.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current == nil {
		return nil
	}
	return c.current.conn
}

// Close closes the connection (the identity stays; close it separately).
func (c *DirectClient) Close() error {
	c.mu.Lock()
	current := c.current
	c.current = nil
	c.mu.Unlock()
	if current == nil {
		return nil
	}
	close(c.closed)
	<-c.watcherDone
	return current.conn.Close()
}

// Invoke calls a capability through the server. The deadline is ctx's, or 30 s.
func (c *DirectClient) Invoke(ctx context.Context, capability string, payload []byte, options ...InvokeOption) (*Reply, error) {
	settings := newInvokeSettings(options)
	if settings.selectorError != nil {
		return nil, settings.selectorError
	}
	if _, has := ctx.Deadline(); !has {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.callTimeout)
		defer cancel()
	}
	server, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer server.calls.Done()
	response, err := server.orchestrator.Invoke(ctx, &agentmeshv1.InvokeRequest{
		Capability:    capability,
		VersionRange:  settings.versionRange,
		LabelSelector: settings.labelSelector,
		Payload:       payload,
		ContentType:   settings.contentType,
		Idempotent:    settings.idempotent,
		Metadata:      settings.metadata,
	})
	if err != nil {
		return nil, FromError(err)
	}
	return &Reply{Payload: response.GetPayload(), ContentType: response.GetContentType(), InstanceID: response.GetInstanceId(), Version: response.GetVersion()}, nil
}

// Discover lists healthy instances offering a capability.
func (c *DirectClient) Discover(ctx context.Context, capability string, options ...InvokeOption) ([]*agentmeshv1.AgentInstance, error) {
	settings := newInvokeSettings(options)
	if settings.selectorError != nil {
		return nil, settings.selectorError
	}
	server, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer server.calls.Done()
	response, err := server.registry.Discover(ctx, &agentmeshv1.DiscoverRequest{Capability: capability, VersionRange: settings.versionRange, LabelSelector: settings.labelSelector})
	if err != nil {
		return nil, FromError(err)
	}
	return response.GetInstances(), nil
}

// The signed messages of docs/signing.md §7 that a direct client sends.
const (
	registerMethod      = "/agentmesh.v1.RegistryService/Register"
	registerPayloadType = "agentmesh.v1.RegisterRequest"
)

// Register registers an instance owned by this identity, signed as the server
// requires (the envelope's payload is the encoded request without envelope;
// the outer request carries only the envelope). It stays STARTING until
// something heartbeats for it on OrchestratorService.Connect, which is what a
// sidecar does: use one to serve calls.
func (c *DirectClient) Register(ctx context.Context, request *agentmeshv1.RegisterRequest) (*agentmeshv1.AgentInstance, error) {
	inner := proto.Clone(request).(*agentmeshv1.RegisterRequest)
	inner.Envelope = nil
	payload, err := proto.Marshal(inner)
	if err != nil {
		return nil, &Error{Code: codes.InvalidArgument, Message: "register request: " + err.Error()}
	}
	envelope, err := c.identity.Sign(payload, registerMethod, registerPayloadType, c.identity.ServerAudience())
	if err != nil {
		return nil, err
	}
	server, err := c.acquire()
	if err != nil {
		return nil, err
	}
	defer server.calls.Done()
	response, err := server.registry.Register(ctx, &agentmeshv1.RegisterRequest{Envelope: envelope})
	if err != nil {
		return nil, FromError(err)
	}
	return response.GetInstance(), nil
}

// Deregister removes an instance this identity registered.
func (c *DirectClient) Deregister(ctx context.Context, instanceID, reason string) error {
	server, err := c.acquire()
	if err != nil {
		return err
	}
	defer server.calls.Done()
	if _, err := server.registry.Deregister(ctx, &agentmeshv1.DeregisterRequest{InstanceId: instanceID, Reason: reason}); err != nil {
		return FromError(err)
	}
	return nil
}
