package agentmesh_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

func newTestCaller(t *testing.T, address string, options ...agentmesh.Option) *agentmesh.Caller {
	t.Helper()
	base := []agentmesh.Option{agentmesh.WithSidecarAddress(address), agentmesh.WithLogger(nil), agentmesh.WithReconnectBackoff(5*time.Millisecond, 20*time.Millisecond)}
	caller, err := agentmesh.NewCaller(append(base, options...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { caller.Close() })
	return caller
}

type invokeResult struct {
	reply *agentmesh.Reply
	err   error
}

func invokeAsync(ctx context.Context, caller *agentmesh.Caller, capability string, options ...agentmesh.InvokeOption) chan invokeResult {
	results := make(chan invokeResult, 1)
	go func() {
		reply, err := caller.Invoke(ctx, capability, []byte("payload"), options...)
		results <- invokeResult{reply, err}
	}()
	return results
}

func await(t *testing.T, results chan invokeResult) invokeResult {
	t.Helper()
	select {
	case result := <-results:
		return result
	case <-time.After(waitLimit):
		t.Fatal("Invoke did not return")
		return invokeResult{}
	}
}

func isOpen(frame *agentmeshv1.CallFrame) bool {
	return frame.GetKind() == agentmeshv1.CallFrame_KIND_OPEN
}

func TestInvokeSendsTheRoutingRequestAndReturnsTheReply(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	results := invokeAsync(ctx, caller, "sql.query",
		agentmesh.WithVersionRange("^2.1.0"), agentmesh.WithSelector("env=prod,tier in (a|b),!canary"),
		agentmesh.WithIdempotent(), agentmesh.WithContentType("application/json"), agentmesh.WithMetadata(map[string]string{"traceparent": "00-abc"}))
	peer := sidecar.nextCall(t)
	open := peer.next(t, isOpen)
	request := open.GetRequest()
	switch {
	case request.GetCapability() != "sql.query", request.GetVersionRange() != "^2.1.0", !request.GetIdempotent(),
		request.GetContentType() != "application/json", string(request.GetPayload()) != "payload",
		request.GetMetadata()["traceparent"] != "00-abc", request.GetLabelSelector().GetMatchLabels()["env"] != "prod",
		len(request.GetLabelSelector().GetMatchExpressions()) != 2, open.GetStreaming():
		t.Fatalf("open frame %v", open)
	}
	// The deadline travels as a relative timeout, within the context's.
	if timeout := request.GetTimeoutMs(); timeout == 0 || timeout > 5000 {
		t.Fatalf("timeout_ms %d", timeout)
	}
	peer.mustSend(t, &agentmeshv1.CallFrame{CallId: open.GetCallId(), Kind: agentmeshv1.CallFrame_KIND_DATA, End: true, Payload: []byte("rows"), InstanceId: "sql-1", Version: "2.3.0", ContentType: "text/csv"})
	result := await(t, results)
	if result.err != nil {
		t.Fatal(result.err)
	}
	if got := result.reply; string(got.Payload) != "rows" || got.InstanceID != "sql-1" || got.Version != "2.3.0" || got.ContentType != "text/csv" {
		t.Fatalf("reply %+v", got)
	}
}

func TestInvokeWithoutADeadlineUsesTheCallTimeout(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address, agentmesh.WithCallTimeout(1500*time.Millisecond))
	invokeAsync(context.Background(), caller, "x")
	open := sidecar.nextCall(t).next(t, isOpen)
	if timeout := open.GetRequest().GetTimeoutMs(); timeout == 0 || timeout > 1500 {
		t.Fatalf("timeout_ms %d", timeout)
	}
}

func TestInvokeErrorsCarryTheStatusForErrorsIs(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	cases := []struct {
		code     codes.Code
		sentinel error
		refused  bool
	}{
		{codes.NotFound, agentmesh.ErrNotFound, false},
		{codes.Unavailable, agentmesh.ErrUnavailable, true},
		{codes.ResourceExhausted, agentmesh.ErrResourceExhausted, false},
		{codes.PermissionDenied, agentmesh.ErrPermissionDenied, false},
		{codes.InvalidArgument, agentmesh.ErrInvalidArgument, false},
	}
	var peer *peerStream
	for _, expected := range cases {
		results := invokeAsync(context.Background(), caller, "x")
		if peer == nil {
			peer = sidecar.nextCall(t)
		}
		open := peer.next(t, isOpen)
		end := &agentmeshv1.CallFrame{CallId: open.GetCallId(), Kind: agentmeshv1.CallFrame_KIND_END, StatusCode: int32(expected.code), StatusMessage: "why", RefusedBeforeDelivery: expected.refused}
		peer.mustSend(t, end)
		err := await(t, results).err
		var meshError *agentmesh.Error
		if !errors.Is(err, expected.sentinel) || !errors.As(err, &meshError) || meshError.Message != "why" || meshError.RefusedBeforeDelivery != expected.refused {
			t.Errorf("%v: got %#v", expected.code, err)
		}
		if agentmesh.Code(err) != expected.code {
			t.Errorf("Code(%v) = %v", err, agentmesh.Code(err))
		}
		for _, other := range cases {
			if other.code != expected.code && errors.Is(err, other.sentinel) {
				t.Errorf("%v also matches %v", expected.code, other.code)
			}
		}
	}
}

func TestCancellingTheContextCancelsTheCallAtTheSidecar(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	ctx, cancel := context.WithCancel(context.Background())
	results := invokeAsync(ctx, caller, "slow")
	peer := sidecar.nextCall(t)
	open := peer.next(t, isOpen)
	cancel()
	err := await(t, results).err
	if !errors.Is(err, agentmesh.ErrCanceled) || !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v", err)
	}
	if frame := peer.next(t, ofCall(open.GetCallId())); frame.GetKind() != agentmeshv1.CallFrame_KIND_CANCEL {
		t.Fatalf("got %v", frame)
	}
}

func TestDeadlineEndsTheCallWithDeadlineExceeded(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := await(t, invokeAsync(ctx, caller, "slow")).err
	if !errors.Is(err, agentmesh.ErrDeadlineExceeded) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
}

func TestInvokeStreamYieldsChunksThenEOF(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	streamReady := make(chan *agentmesh.ReplyStream, 1)
	go func() {
		stream, err := caller.InvokeStream(context.Background(), "text.tokens", []byte("go"), agentmesh.WithIdempotent())
		if err != nil {
			t.Error(err)
		}
		streamReady <- stream
	}()
	peer := sidecar.nextCall(t)
	open := peer.next(t, isOpen)
	if !open.GetStreaming() || open.GetRequest().GetIdempotent() {
		t.Fatalf("streams are never retried elsewhere: %v", open)
	}
	id := open.GetCallId()
	peer.mustSend(t,
		&agentmeshv1.CallFrame{CallId: id, Kind: agentmeshv1.CallFrame_KIND_DATA, Sequence: 1, Payload: []byte("a")},
		&agentmeshv1.CallFrame{CallId: id, Kind: agentmeshv1.CallFrame_KIND_DATA, Sequence: 2, Payload: []byte("b")},
		&agentmeshv1.CallFrame{CallId: id, Kind: agentmeshv1.CallFrame_KIND_END})
	stream := <-streamReady
	var got []string
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(chunk))
	}
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("chunks %q", got)
	}
}

func TestClosingAStreamEarlyCancelsIt(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	streamReady := make(chan *agentmesh.ReplyStream, 1)
	go func() {
		stream, _ := caller.InvokeStream(context.Background(), "text.tokens", nil)
		streamReady <- stream
	}()
	peer := sidecar.nextCall(t)
	open := peer.next(t, isOpen)
	stream := <-streamReady
	stream.Close()
	if frame := peer.next(t, ofCall(open.GetCallId())); frame.GetKind() != agentmeshv1.CallFrame_KIND_CANCEL {
		t.Fatalf("got %v", frame)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Fatalf("Recv after Close: %v", err)
	}
}

func TestABrokenStreamFailsCallsInFlightThenReconnects(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	results := invokeAsync(context.Background(), caller, "x")
	first := sidecar.nextCall(t)
	first.next(t, isOpen)
	close(first.finish)
	if err := await(t, results).err; !errors.Is(err, agentmesh.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	// The next call waits for the new stream instead of failing.
	results = invokeAsync(context.Background(), caller, "x")
	second := sidecar.nextCall(t)
	open := second.next(t, isOpen)
	second.mustSend(t, &agentmeshv1.CallFrame{CallId: open.GetCallId(), Kind: agentmeshv1.CallFrame_KIND_DATA, End: true, Payload: []byte("ok")})
	if result := await(t, results); result.err != nil || string(result.reply.Payload) != "ok" {
		t.Fatalf("got %+v", result)
	}
}

func TestCallsBeyondTheWindowFailAtOnce(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address, agentmesh.WithMaxInFlight(1))
	invokeAsync(context.Background(), caller, "x")
	sidecar.nextCall(t).next(t, isOpen)
	_, err := caller.Invoke(context.Background(), "x", nil)
	if !errors.Is(err, agentmesh.ErrResourceExhausted) {
		t.Fatalf("got %v", err)
	}
}

func TestBadCallsAreRefusedBeforeSending(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	if _, err := caller.Invoke(context.Background(), "", nil); !errors.Is(err, agentmesh.ErrInvalidArgument) {
		t.Fatalf("empty capability: %v", err)
	}
	if _, err := caller.Invoke(context.Background(), "x", nil, agentmesh.WithSelector("=v")); !errors.Is(err, agentmesh.ErrInvalidArgument) {
		t.Fatalf("bad selector: %v", err)
	}
}

func TestClosedCallerFailsWithUnavailable(t *testing.T) {
	sidecar := startFakeSidecar(t)
	caller := newTestCaller(t, sidecar.address)
	caller.Close()
	if _, err := caller.Invoke(context.Background(), "x", nil); !errors.Is(err, agentmesh.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
}
