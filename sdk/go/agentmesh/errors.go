package agentmesh

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Error is a failure with a gRPC status code and a short, safe message: what
// a call through the mesh returns, and what a handler returns to choose the
// status its caller sees. Compare with errors.Is against the sentinels:
//
//	if errors.Is(err, agentmesh.ErrUnavailable) { ... }
type Error struct {
	Code    codes.Code
	Message string
	// RefusedBeforeDelivery: no agent saw the call (the target was draining or
	// gone), so it may be sent again even when it is not idempotent.
	RefusedBeforeDelivery bool
	cause                 error
}

// The sentinels, one per gRPC code. They carry no message; errors.Is matches
// any *Error of the same code.
var (
	ErrCanceled           = &Error{Code: codes.Canceled}
	ErrUnknown            = &Error{Code: codes.Unknown}
	ErrInvalidArgument    = &Error{Code: codes.InvalidArgument}
	ErrDeadlineExceeded   = &Error{Code: codes.DeadlineExceeded}
	ErrNotFound           = &Error{Code: codes.NotFound}
	ErrAlreadyExists      = &Error{Code: codes.AlreadyExists}
	ErrPermissionDenied   = &Error{Code: codes.PermissionDenied}
	ErrResourceExhausted  = &Error{Code: codes.ResourceExhausted}
	ErrFailedPrecondition = &Error{Code: codes.FailedPrecondition}
	ErrAborted            = &Error{Code: codes.Aborted}
	ErrOutOfRange         = &Error{Code: codes.OutOfRange}
	ErrUnimplemented      = &Error{Code: codes.Unimplemented}
	ErrInternal           = &Error{Code: codes.Internal}
	ErrUnavailable        = &Error{Code: codes.Unavailable}
	ErrDataLoss           = &Error{Code: codes.DataLoss}
	ErrUnauthenticated    = &Error{Code: codes.Unauthenticated}
)

// NewError returns an *Error with the code and message; a handler returns it
// to answer its caller with that status.
func NewError(code codes.Code, message string) *Error {
	return &Error{Code: code, Message: message}
}

func (e *Error) Error() string {
	if e.Message == "" {
		return codeText(e.Code)
	}
	return codeText(e.Code) + ": " + e.Message
}

// Is matches a sentinel (an *Error without message) of the same code, so
// errors.Is(err, ErrNotFound) holds for every NOT_FOUND error.
func (e *Error) Is(target error) bool {
	other, ok := target.(*Error)
	return ok && other.Message == "" && other.Code == e.Code
}

// Unwrap gives the local cause, if any (for example context.DeadlineExceeded
// when the caller's own deadline ended the call).
func (e *Error) Unwrap() error { return e.cause }

// GRPCStatus lets status.FromError and status.Code read the code.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

// Code returns the gRPC code of err: its *Error's, a gRPC status's, the
// context's (Canceled, DeadlineExceeded), OK for nil and Unknown otherwise.
func Code(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	return FromError(err).Code
}

// FromError converts anything into an *Error: an *Error in the chain as is, a
// gRPC status error by its code and message, context errors to Canceled and
// DeadlineExceeded; anything else is Unknown.
func FromError(err error) *Error {
	if err == nil {
		return nil
	}
	var meshError *Error
	if errors.As(err, &meshError) {
		return meshError
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: codes.DeadlineExceeded, Message: "deadline exceeded", cause: err}
	}
	if errors.Is(err, context.Canceled) {
		return &Error{Code: codes.Canceled, Message: "call cancelled", cause: err}
	}
	if grpcStatus, ok := status.FromError(err); ok {
		return &Error{Code: grpcStatus.Code(), Message: grpcStatus.Message(), cause: err}
	}
	return &Error{Code: codes.Unknown, Message: err.Error(), cause: err}
}

// errorFromStatus is what a caller sees for a non-OK END frame.
func errorFromStatus(code codes.Code, message string, refusedBeforeDelivery bool) *Error {
	if message == "" {
		message = "call failed with " + codeText(code)
	}
	return &Error{Code: code, Message: message, RefusedBeforeDelivery: refusedBeforeDelivery}
}

// replyStatus is the status a handler's error answers with. An *Error (or a
// sentinel wrapped with fmt.Errorf("...: %w", ErrNotFound)) is the handler
// choosing what the caller sees; anything else stays inside the agent.
func replyStatus(err error) (code codes.Code, message string, internal bool) {
	var meshError *Error
	if errors.As(err, &meshError) {
		if meshError.Message == "" {
			// A wrapped sentinel: the handler wrote the text around it for the caller.
			return meshError.Code, err.Error(), false
		}
		return meshError.Code, meshError.Message, false
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded, "deadline exceeded", false
	case errors.Is(err, context.Canceled):
		return codes.Canceled, "call cancelled", false
	}
	return codes.Internal, "agent failed", true
}

// codeText is the code in words: "not found", "deadline exceeded".
func codeText(code codes.Code) string {
	if code == codes.OK {
		return "ok"
	}
	name := code.String()
	if strings.HasPrefix(name, "Code(") {
		return "code " + strings.TrimSuffix(strings.TrimPrefix(name, "Code("), ")")
	}
	var out strings.Builder
	for index, letter := range name {
		if letter >= 'A' && letter <= 'Z' {
			if index > 0 {
				out.WriteByte(' ')
			}
			letter += 'a' - 'A'
		}
		out.WriteRune(letter)
	}
	return out.String()
}
