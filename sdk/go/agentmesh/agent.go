// Package agentmesh is the Go SDK for agentmesh agents: serve capabilities over
// the sidecar's Attach stream (Agent), call other agents through the sidecar
// (Caller), or, without a sidecar, join the mesh directly (Join, DirectClient).
package agentmesh

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

// ErrOrphaned is returned by Run when the sidecar was gone for the orphan timeout.
var ErrOrphaned = errors.New("agentmesh: no sidecar for the orphan timeout")

// Request is one invocation as a handler sees it.
type Request struct {
	CallID     string
	Capability string
	// Version of the capability the caller was routed to.
	Version     string
	Payload     []byte
	ContentType string
	// Caller is the SPIFFE ID of the calling agent or client, as verified by the sidecar.
	Caller      string
	Metadata    map[string]string
	Traceparent string
	// Deadline is the caller's deadline (zero: none); the handler's context carries it too.
	Deadline time.Time
}

// HandlerFunc answers a unary call. Return an *Error (or a sentinel, possibly
// wrapped with fmt.Errorf("...: %w", ErrNotFound)) to choose the status the
// caller sees; any other error answers INTERNAL "agent failed" and is logged.
type HandlerFunc func(ctx context.Context, request *Request) ([]byte, error)

// StreamHandlerFunc answers a streaming call chunk by chunk with stream.Send.
type StreamHandlerFunc func(ctx context.Context, request *Request, stream *Stream) error

// Stream sends the chunks of one streamed reply.
type Stream struct {
	ctx      context.Context
	session  *attachSession
	callID   uint64
	sequence uint64
	chunks   [][]byte // a unary call served by a stream handler collects here
	collect  bool
}

// Send sends one chunk, waiting while the sidecar is behind. It fails once the
// call is cancelled, its deadline passes or the sidecar is gone.
func (s *Stream) Send(chunk []byte) error {
	if err := s.ctx.Err(); err != nil {
		return FromError(err)
	}
	if s.collect {
		s.chunks = append(s.chunks, chunk)
		return nil
	}
	s.sequence++
	if !s.session.writer.push(dataFrame(s.callID, chunk, s.sequence, false)) {
		return &Error{Code: codes.Unavailable, Message: "sidecar stream closed"}
	}
	return nil
}

// Agent serves capabilities over ONE stream to its sidecar (SidecarService.Attach):
// no listening port, and the sidecar sees the agent's death the moment the
// stream breaks. Build it with NewAgent, register handlers, then Run.
type Agent struct {
	settings       config
	conn           *grpc.ClientConn
	mu             sync.RWMutex
	handlers       map[string]HandlerFunc
	streamHandlers map[string]StreamHandlerFunc
	ready          chan struct{}
	readyOnce      sync.Once
	running        atomic.Bool
	callerOnce     sync.Once
	caller         *Caller
	random         func() float64
}

// NewAgent prepares an agent for the sidecar at $AGENTMESH_SIDECAR_ADDR serving
// the instance $AGENTMESH_INSTANCE_ID (both set by the sidecar that starts it),
// unless options say otherwise. It does not connect yet: Run does.
func NewAgent(options ...Option) (*Agent, error) {
	settings := newConfig(options)
	if settings.sidecarAddress == "" {
		return nil, fmt.Errorf("%w: %s is not set: run the agent under an agentmesh sidecar", ErrInvalidArgument, EnvSidecarAddress)
	}
	if settings.instanceID == "" {
		if settings.manifest == nil {
			return nil, fmt.Errorf("%w: %s is not set: run the agent under an agentmesh sidecar, or give WithManifest", ErrInvalidArgument, EnvInstanceID)
		}
		settings.instanceID = settings.manifest.GetName() + "-" + randomSuffix()
	}
	conn, err := dialSidecar(settings)
	if err != nil {
		return nil, err
	}
	return &Agent{
		settings:       settings,
		conn:           conn,
		handlers:       map[string]HandlerFunc{},
		streamHandlers: map[string]StreamHandlerFunc{},
		ready:          make(chan struct{}),
		random:         defaultRandom,
	}, nil
}

func dialSidecar(settings config) (*grpc.ClientConn, error) {
	options := []grpc.DialOption{
		// The sidecar's local port is plaintext on 127.0.0.1 by design (DESIGN §1).
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Keep the channel's own reconnects at our pace instead of gRPC's 1 s..120 s default.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: settings.backoff.initial, Multiplier: settings.backoff.multiplier, Jitter: settings.backoff.jitter, MaxDelay: settings.backoff.max},
			MinConnectTimeout: 2 * time.Second,
		}),
		// A frozen sidecar (open socket, nobody home) is noticed within Time + Timeout.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
	}
	conn, err := grpc.NewClient(settings.sidecarAddress, append(options, settings.dialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: sidecar address %q: %v", ErrInvalidArgument, settings.sidecarAddress, err)
	}
	return conn, nil
}

func randomSuffix() string {
	bytes := make([]byte, 4)
	_, _ = rand.Read(bytes)
	return hex.EncodeToString(bytes)
}

// InstanceID is the local instance this agent serves.
func (a *Agent) InstanceID() string { return a.settings.instanceID }

// Handle serves a capability with a unary handler.
func (a *Agent) Handle(capability string, handler HandlerFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.handlers[capability] = handler
}

// HandleStream serves a capability with a streaming handler. A unary call to
// it gets the chunks concatenated.
func (a *Agent) HandleStream(capability string, handler StreamHandlerFunc) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.streamHandlers[capability] = handler
}

// Ready is closed once the sidecar first welcomed the agent: from then on it
// receives calls (and stays ready across reconnects).
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// Caller calls other agents through the same sidecar, on the agent's connection.
// It stops working when Run returns.
func (a *Agent) Caller() *Caller {
	a.callerOnce.Do(func() { a.caller = newCaller(a.settings, a.conn, false) })
	return a.caller
}

// Run attaches to the sidecar and serves until ctx is done, reconnecting with
// backoff whenever the stream breaks. When ctx is done (for example
// signal.NotifyContext on SIGTERM) it stops taking calls, lets those in flight
// finish (up to the shutdown timeout), leaves the stream cleanly and returns
// nil. It returns ErrOrphaned when no sidecar welcomed it for the orphan timeout.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: Run called twice", ErrFailedPrecondition)
	}
	defer func() {
		if a.caller != nil {
			a.caller.Close()
		}
		a.conn.Close()
	}()
	client := agentmeshv1.NewSidecarServiceClient(a.conn)
	log := a.settings.logger.With("component", "agentmesh-agent", "instanceId", a.settings.instanceID)
	orphan := newOrphanClock(a.settings.orphanTimeout)
	defer orphan.stop()
	attempt := 0
	for {
		if ctx.Err() != nil {
			return nil
		}
		session := newAttachSession(a, log)
		welcomed, err := session.run(ctx, client, orphan.disarm)
		if err == nil {
			return nil
		}
		if welcomed {
			attempt = 0
		}
		orphan.arm()
		delay := a.settings.backoff.delay(attempt, a.random)
		attempt++
		log.Warn("sidecar stream lost, reconnecting", "err", err, "retryInMs", delay.Milliseconds())
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-orphan.expired():
			timer.Stop()
			return fmt.Errorf("%w (%s without a sidecar; last error: %v)", ErrOrphaned, a.settings.orphanTimeout, err)
		case <-timer.C:
		}
	}
}

func (a *Agent) markReady() { a.readyOnce.Do(func() { close(a.ready) }) }

func (a *Agent) lookup(capability string) (HandlerFunc, StreamHandlerFunc) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.handlers[capability], a.streamHandlers[capability]
}

// orphanClock fires when the agent has been without a welcomed stream for the timeout.
type orphanClock struct {
	timeout time.Duration
	mu      sync.Mutex
	timer   *time.Timer
	fired   chan struct{}
}

func newOrphanClock(timeout time.Duration) *orphanClock {
	clock := &orphanClock{timeout: timeout, fired: make(chan struct{})}
	clock.arm() // a sidecar that never welcomes us is as gone as one that died
	return clock
}

func (c *orphanClock) arm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timeout <= 0 || c.timer != nil {
		return
	}
	fired := c.fired
	c.timer = time.AfterFunc(c.timeout, func() { close(fired) })
}

func (c *orphanClock) disarm() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil && c.timer.Stop() {
		c.timer = nil
		return
	}
	if c.timer != nil {
		// It fired while we were being welcomed: start over with a fresh channel.
		c.timer = nil
		c.fired = make(chan struct{})
	}
}

func (c *orphanClock) expired() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fired
}

func (c *orphanClock) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
	}
}

// attachSession is one Attach stream and the calls running on it.
type attachSession struct {
	agent    *Agent
	log      *slog.Logger
	writer   *frameWriter
	ctx      context.Context // handlers' parent: cancelled when the stream is gone
	cancel   context.CancelFunc
	draining atomic.Bool
	mu       sync.Mutex
	running  map[uint64]context.CancelFunc
	inFlight sync.WaitGroup
}

func newAttachSession(agent *Agent, log *slog.Logger) *attachSession {
	ctx, cancel := context.WithCancel(context.Background())
	return &attachSession{agent: agent, log: log, ctx: ctx, cancel: cancel, running: map[uint64]context.CancelFunc{}}
}

// run serves one stream. It returns nil after a graceful shutdown, or the
// error that broke the stream; welcomed says whether the sidecar had accepted it.
func (s *attachSession) run(shutdown context.Context, client agentmeshv1.SidecarServiceClient, onWelcome func()) (welcomed bool, err error) {
	defer s.cancel()
	// Not derived from shutdown: the stream must outlive SIGTERM until in-flight calls have answered.
	stream, err := client.Attach(s.ctx)
	if err != nil {
		return false, err
	}
	s.writer = newFrameWriter(
		func(frames []*agentmeshv1.CallFrame) error {
			return stream.Send(&agentmeshv1.AttachRequest{Replies: frames})
		},
		stream.CloseSend,
		make(chan struct{}),
	)
	defer close(s.writer.done)
	hello := &agentmeshv1.AttachHello{InstanceId: s.agent.settings.instanceID, Manifest: s.agent.settings.manifest}
	if err := stream.Send(&agentmeshv1.AttachRequest{Msg: &agentmeshv1.AttachRequest_Hello{Hello: hello}}); err != nil {
		return false, err
	}
	var welcomedFlag atomic.Bool
	readerDone := make(chan error, 1)
	go func() {
		readerDone <- s.read(stream, func() {
			welcomedFlag.Store(true)
			onWelcome()
			s.agent.markReady()
			s.log.Info("attached to sidecar")
		})
	}()
	select {
	case err := <-readerDone:
		return welcomedFlag.Load(), s.broken(err)
	case <-shutdown.Done():
		return welcomedFlag.Load(), s.drain(readerDone)
	}
}

// read handles frames from the sidecar until the stream ends. It never runs a
// handler itself, so a PING is answered at once whatever the handlers do.
func (s *attachSession) read(stream agentmeshv1.SidecarService_AttachClient, onWelcome func()) error {
	for {
		response, err := stream.Recv()
		if err != nil {
			return err
		}
		switch message := response.GetMsg().(type) {
		case *agentmeshv1.AttachResponse_Welcome:
			onWelcome()
		case *agentmeshv1.AttachResponse_Call:
			s.receive(message.Call)
		}
		for _, frame := range response.GetCalls() {
			s.receive(frame)
		}
	}
}

func (s *attachSession) receive(frame *agentmeshv1.CallFrame) {
	switch frame.GetKind() {
	case kindPing:
		s.writer.pushControl(pongFrame(frame.GetSequence()))
	case kindCancel:
		s.mu.Lock()
		cancel := s.running[frame.GetCallId()]
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	case kindOpen:
		s.open(frame)
	}
}

func (s *attachSession) open(frame *agentmeshv1.CallFrame) {
	callID := frame.GetCallId()
	if s.draining.Load() {
		// No handler saw it, so the caller's sidecar may send it to another instance.
		s.writer.push(refusedFrame(callID, codes.Unavailable, "agent shutting down"))
		return
	}
	invocation := frame.GetInvocation()
	if invocation == nil {
		s.writer.push(refusedFrame(callID, codes.InvalidArgument, "open frame carries no invocation"))
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	request := requestOf(invocation)
	if !request.Deadline.IsZero() {
		var cancelDeadline context.CancelFunc
		ctx, cancelDeadline = context.WithDeadline(ctx, request.Deadline)
		parentCancel := cancel
		cancel = func() { cancelDeadline(); parentCancel() }
	}
	s.mu.Lock()
	if _, duplicate := s.running[callID]; duplicate {
		s.mu.Unlock()
		cancel()
		s.log.Warn("duplicate call id on attach stream", "callId", callID)
		return
	}
	s.running[callID] = cancel
	s.inFlight.Add(1)
	s.mu.Unlock()
	go s.serve(ctx, cancel, callID, frame.GetStreaming(), request)
}

func (s *attachSession) serve(ctx context.Context, cancel context.CancelFunc, callID uint64, streaming bool, request *Request) {
	defer func() {
		s.mu.Lock()
		delete(s.running, callID)
		s.mu.Unlock()
		cancel()
		s.inFlight.Done()
	}()
	reply := s.invoke(ctx, callID, streaming, request)
	// A cancelled call has nobody waiting for its answer.
	if reply != nil && ctx.Err() == nil {
		s.writer.push(reply)
	}
}

// invoke runs the handler and returns the frame that finishes the call.
func (s *attachSession) invoke(ctx context.Context, callID uint64, streaming bool, request *Request) (reply *agentmeshv1.CallFrame) {
	defer func() {
		if recovered := recover(); recovered != nil {
			s.log.Error("handler panicked", "callId", callID, "capability", request.Capability, "panic", recovered, "stack", string(debug.Stack()))
			reply = endFrame(callID, codes.Internal, "agent failed")
		}
	}()
	unary, streamHandler := s.agent.lookup(request.Capability)
	switch {
	case streamHandler != nil:
		stream := &Stream{ctx: ctx, session: s, callID: callID, collect: !streaming}
		if err := streamHandler(ctx, request, stream); err != nil {
			return s.failure(callID, request, err)
		}
		if !streaming {
			return dataFrame(callID, concat(stream.chunks), 0, true)
		}
		return endFrame(callID, codes.OK, "")
	case unary != nil:
		payload, err := unary(ctx, request)
		if err != nil {
			return s.failure(callID, request, err)
		}
		return dataFrame(callID, payload, 0, true)
	default:
		return endFrame(callID, codes.NotFound, fmt.Sprintf("capability %s not served here", request.Capability))
	}
}

func (s *attachSession) failure(callID uint64, request *Request, err error) *agentmeshv1.CallFrame {
	code, message, internal := replyStatus(err)
	if internal {
		s.log.Error("handler failed", "callId", callID, "capability", request.Capability, "err", err)
	}
	return endFrame(callID, code, message)
}

// broken: nobody can receive the answers any more, so stop the handlers.
func (s *attachSession) broken(err error) error {
	s.cancel()
	if err == nil || errors.Is(err, io.EOF) {
		return &Error{Code: codes.Unavailable, Message: "sidecar ended the attach stream"}
	}
	return err
}

// drain finishes the calls in flight, refusing new ones, then leaves the stream.
func (s *attachSession) drain(readerDone <-chan error) error {
	s.draining.Store(true)
	s.log.Info("shutting down: finishing calls in flight")
	finished := make(chan struct{})
	go func() {
		s.inFlight.Wait()
		close(finished)
	}()
	timeout := time.NewTimer(s.agent.settings.shutdownTimeout)
	defer timeout.Stop()
	select {
	case <-finished:
	case err := <-readerDone:
		// The sidecar went away first: the answers have nowhere to go.
		s.cancel()
		s.log.Warn("sidecar gone while shutting down", "err", err)
		return nil
	case <-timeout.C:
		s.log.Warn("shutdown timeout: cancelling calls in flight", "timeoutMs", s.agent.settings.shutdownTimeout.Milliseconds())
		s.cancelRunning()
		<-finished
	}
	s.writer.closeAfterQueued()
	<-s.writer.exited
	// The sidecar ends its side once it has read our half-close; then every answer has arrived.
	select {
	case <-readerDone:
	case <-time.After(2 * time.Second):
	}
	s.log.Info("left the sidecar")
	return nil
}

func (s *attachSession) cancelRunning() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cancel := range s.running {
		cancel()
	}
}

func requestOf(invocation *agentmeshv1.Invocation) *Request {
	request := &Request{
		CallID:      invocation.GetCallId(),
		Capability:  invocation.GetCapability(),
		Version:     invocation.GetVersion(),
		Payload:     invocation.GetPayload(),
		ContentType: invocation.GetContentType(),
		Caller:      invocation.GetCaller(),
		Metadata:    invocation.GetMetadata(),
		Traceparent: invocation.GetTraceparent(),
	}
	if deadlineMs := invocation.GetDeadlineMs(); deadlineMs > 0 {
		request.Deadline = time.UnixMilli(deadlineMs)
	}
	return request
}

func concat(chunks [][]byte) []byte {
	if len(chunks) == 1 {
		return chunks[0]
	}
	var out []byte
	for _, chunk := range chunks {
		out = append(out, chunk...)
	}
	return out
}
