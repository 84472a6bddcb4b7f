package agentmesh

import (
	"google.golang.org/grpc/codes"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

type frameKind = agentmeshv1.CallFrame_Kind

const (
	kindOpen   = agentmeshv1.CallFrame_KIND_OPEN
	kindData   = agentmeshv1.CallFrame_KIND_DATA
	kindEnd    = agentmeshv1.CallFrame_KIND_END
	kindCancel = agentmeshv1.CallFrame_KIND_CANCEL
	kindPing   = agentmeshv1.CallFrame_KIND_PING
	kindPong   = agentmeshv1.CallFrame_KIND_PONG
)

// dataFrame is one chunk of a reply; end marks a unary reply complete in one frame.
func dataFrame(callID uint64, payload []byte, sequence uint64, end bool) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{CallId: callID, Kind: kindData, Payload: payload, Sequence: sequence, End: end}
}

func endFrame(callID uint64, code codes.Code, message string) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{CallId: callID, Kind: kindEnd, StatusCode: int32(code), StatusMessage: message}
}

// refusedFrame ends a call no handler saw, so the caller's sidecar may send it elsewhere.
func refusedFrame(callID uint64, code codes.Code, message string) *agentmeshv1.CallFrame {
	frame := endFrame(callID, code, message)
	frame.RefusedBeforeDelivery = true
	return frame
}

func cancelFrame(callID uint64) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{CallId: callID, Kind: kindCancel}
}

// pongFrame answers a liveness probe: call id 0 and the probe's sequence.
func pongFrame(sequence uint64) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{Kind: kindPong, Sequence: sequence}
}

func openFrame(callID uint64, request *agentmeshv1.SidecarServiceInvokeRequest, streaming bool) *agentmeshv1.CallFrame {
	return &agentmeshv1.CallFrame{CallId: callID, Kind: kindOpen, Request: request, Streaming: streaming}
}
