package agentmesh_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

// waitLimit bounds every wait in these tests: a broken SDK fails the test
// instead of hanging it. Nothing here asserts on how long anything took.
const waitLimit = 10 * time.Second

// fakeSidecar is a real gRPC server on a loopback port speaking the sidecar's
// side of Attach and Call, driven frame by frame by the test. The real sidecar
// is exercised end to end in test/e2e/sdk-go.test.ts; this one lets a test
// place a PING behind a blocked handler or a CANCEL at an exact moment.
type fakeSidecar struct {
	agentmeshv1.UnimplementedSidecarServiceServer
	address  string
	server   *grpc.Server
	listener net.Listener
	attaches chan *peerStream
	calls    chan *peerStream
}

// peerStream is one accepted stream: what the SDK sent, and a way to answer.
type peerStream struct {
	received chan *agentmeshv1.CallFrame
	hello    chan *agentmeshv1.AttachHello
	// halfClosed closes when the SDK ended its side.
	halfClosed chan struct{}
	send       func([]*agentmeshv1.CallFrame) error
	welcome    func() error
	// finish ends the stream from the sidecar's side.
	finish chan struct{}
	// backlog holds frames received but not yet asked for.
	backlog []*agentmeshv1.CallFrame
}

func startFakeSidecar(t *testing.T) *fakeSidecar {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sidecar := &fakeSidecar{
		address:  listener.Addr().String(),
		server:   grpc.NewServer(),
		listener: listener,
		attaches: make(chan *peerStream, 16),
		calls:    make(chan *peerStream, 16),
	}
	agentmeshv1.RegisterSidecarServiceServer(sidecar.server, sidecar)
	go func() { _ = sidecar.server.Serve(listener) }()
	t.Cleanup(sidecar.server.Stop)
	return sidecar
}

func newPeerStream() *peerStream {
	return &peerStream{
		received:   make(chan *agentmeshv1.CallFrame, 4096),
		hello:      make(chan *agentmeshv1.AttachHello, 1),
		halfClosed: make(chan struct{}),
		finish:     make(chan struct{}),
	}
}

func (f *fakeSidecar) Attach(stream agentmeshv1.SidecarService_AttachServer) error {
	peer := newPeerStream()
	peer.send = func(frames []*agentmeshv1.CallFrame) error {
		return stream.Send(&agentmeshv1.AttachResponse{Calls: frames})
	}
	peer.welcome = func() error {
		return stream.Send(&agentmeshv1.AttachResponse{Msg: &agentmeshv1.AttachResponse_Welcome{Welcome: &agentmeshv1.AttachWelcome{}}})
	}
	f.attaches <- peer
	return serveFrames(stream.Context(), peer, func() ([]*agentmeshv1.CallFrame, error) {
		request, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		if hello := request.GetHello(); hello != nil {
			peer.hello <- hello
		}
		frames := request.GetReplies()
		if reply := request.GetReply(); reply != nil {
			frames = append(frames, reply)
		}
		return frames, nil
	})
}

func (f *fakeSidecar) Call(stream agentmeshv1.SidecarService_CallServer) error {
	peer := newPeerStream()
	peer.send = func(frames []*agentmeshv1.CallFrame) error {
		return stream.Send(&agentmeshv1.SidecarServiceCallResponse{Frames: frames})
	}
	// Headers at once: the SDK takes them as "the sidecar accepted the stream".
	if err := stream.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	f.calls <- peer
	return serveFrames(stream.Context(), peer, func() ([]*agentmeshv1.CallFrame, error) {
		request, err := stream.Recv()
		if err != nil {
			return nil, err
		}
		return request.GetFrames(), nil
	})
}

// serveFrames collects what the SDK sends until the test finishes the stream or,
// as the real sidecar does, the SDK half-closes it.
func serveFrames(ctx context.Context, peer *peerStream, recv func() ([]*agentmeshv1.CallFrame, error)) error {
	go func() {
		for {
			frames, err := recv()
			if err != nil {
				if err == io.EOF {
					close(peer.halfClosed)
				}
				return
			}
			for _, frame := range frames {
				peer.received <- frame
			}
		}
	}()
	select {
	case <-peer.finish:
	case <-peer.halfClosed:
	case <-ctx.Done():
	}
	return nil
}

func (f *fakeSidecar) nextAttach(t *testing.T) *peerStream {
	t.Helper()
	select {
	case peer := <-f.attaches:
		return peer
	case <-time.After(waitLimit):
		t.Fatal("no attach stream opened")
		return nil
	}
}

func (f *fakeSidecar) nextCall(t *testing.T) *peerStream {
	t.Helper()
	select {
	case peer := <-f.calls:
		return peer
	case <-time.After(waitLimit):
		t.Fatal("no call stream opened")
		return nil
	}
}

// next returns the first frame the SDK sent that matches, keeping the others for later.
func (p *peerStream) next(t *testing.T, match func(*agentmeshv1.CallFrame) bool) *agentmeshv1.CallFrame {
	t.Helper()
	for index, frame := range p.backlog {
		if match(frame) {
			p.backlog = append(p.backlog[:index], p.backlog[index+1:]...)
			return frame
		}
	}
	timeout := time.After(waitLimit)
	for {
		select {
		case frame := <-p.received:
			if match(frame) {
				return frame
			}
			p.backlog = append(p.backlog, frame)
		case <-timeout:
			t.Fatal("expected frame not received")
			return nil
		}
	}
}

func (p *peerStream) mustSend(t *testing.T, frames ...*agentmeshv1.CallFrame) {
	t.Helper()
	if err := p.send(frames); err != nil {
		t.Fatal(err)
	}
}

func (p *peerStream) waitHello(t *testing.T) *agentmeshv1.AttachHello {
	t.Helper()
	select {
	case hello := <-p.hello:
		return hello
	case <-time.After(waitLimit):
		t.Fatal("no hello")
		return nil
	}
}

func waitClosed(t *testing.T, what string, channel <-chan struct{}) {
	t.Helper()
	select {
	case <-channel:
	case <-time.After(waitLimit):
		t.Fatalf("%s did not happen", what)
	}
}

func ofCall(callID uint64) func(*agentmeshv1.CallFrame) bool {
	return func(frame *agentmeshv1.CallFrame) bool { return frame.GetCallId() == callID }
}

func openCall(callID uint64, capability string, payload string, streaming bool) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{
		CallId: callID, Kind: agentmeshv1.CallFrame_KIND_OPEN, Streaming: streaming,
		Invocation: &agentmeshv1.Invocation{CallId: "c", Capability: capability, Version: "1.0.0", Payload: []byte(payload), Caller: "spiffe://mesh.local/agent/x"},
	}
}
