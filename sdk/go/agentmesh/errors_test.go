package agentmesh_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/agentmesh/agentmesh/sdk/go/agentmesh"
	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

func TestFromErrorMapsEveryKindOfFailure(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		sentinel error
		message  string
	}{
		{"grpc status", status.Error(codes.NotFound, "no instance offers x"), agentmesh.ErrNotFound, "no instance offers x"},
		{"deadline", context.DeadlineExceeded, agentmesh.ErrDeadlineExceeded, "deadline exceeded"},
		{"cancel", fmt.Errorf("waiting: %w", context.Canceled), agentmesh.ErrCanceled, "call cancelled"},
		{"wrapped mesh error", fmt.Errorf("step 2: %w", agentmesh.NewError(codes.Unavailable, "gone")), agentmesh.ErrUnavailable, "gone"},
		{"plain", errors.New("boom"), agentmesh.ErrUnknown, "boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			converted := agentmesh.FromError(tc.err)
			if !errors.Is(converted, tc.sentinel) || converted.Message != tc.message {
				t.Fatalf("got %#v", converted)
			}
			if status.Code(converted) != agentmesh.Code(tc.err) {
				t.Fatalf("GRPCStatus code %v, Code %v", status.Code(converted), agentmesh.Code(tc.err))
			}
		})
	}
	if agentmesh.Code(nil) != codes.OK || agentmesh.FromError(nil) != nil {
		t.Fatal("nil is not OK")
	}
}

func TestSentinelsMatchOnlyTheirOwnCode(t *testing.T) {
	err := agentmesh.NewError(codes.PermissionDenied, "not allowed")
	if !errors.Is(err, agentmesh.ErrPermissionDenied) || errors.Is(err, agentmesh.ErrUnauthenticated) {
		t.Fatal("wrong match")
	}
	// A sentinel does not match a message-bearing error of another code, nor the other way round.
	if errors.Is(agentmesh.ErrNotFound, err) {
		t.Fatal("sentinel matched a specific error")
	}
	if got := err.Error(); got != "permission denied: not allowed" {
		t.Fatalf("Error() = %q", got)
	}
	if got := agentmesh.ErrDeadlineExceeded.Error(); got != "deadline exceeded" {
		t.Fatalf("Error() = %q", got)
	}
}

func TestParseLabelSelector(t *testing.T) {
	selector, err := agentmesh.ParseLabelSelector("env=prod, tier in (a|b), zone notin (x), !canary, gpu")
	if err != nil {
		t.Fatal(err)
	}
	if selector.GetMatchLabels()["env"] != "prod" || len(selector.GetMatchExpressions()) != 4 {
		t.Fatalf("selector %v", selector)
	}
	wanted := []struct {
		key      string
		operator agentmeshv1.LabelRequirement_Operator
		values   int
	}{
		{"tier", agentmeshv1.LabelRequirement_OPERATOR_IN, 2},
		{"zone", agentmeshv1.LabelRequirement_OPERATOR_NOT_IN, 1},
		{"canary", agentmeshv1.LabelRequirement_OPERATOR_DOES_NOT_EXIST, 0},
		{"gpu", agentmeshv1.LabelRequirement_OPERATOR_EXISTS, 0},
	}
	for index, expected := range wanted {
		requirement := selector.GetMatchExpressions()[index]
		if requirement.GetKey() != expected.key || requirement.GetOperator() != expected.operator || len(requirement.GetValues()) != expected.values {
			t.Errorf("requirement %d: %v", index, requirement)
		}
	}
	if _, err := agentmesh.ParseLabelSelector("=x"); !errors.Is(err, agentmesh.ErrInvalidArgument) {
		t.Fatalf("empty key: %v", err)
	}
}
