package agentmesh

import (
	"math"
	"math/rand/v2"
	"time"
)

// backoffPolicy is jittered exponential backoff: spread each delay by ±jitter
// of itself so agents whose sidecar restarted do not reconnect in lockstep.
type backoffPolicy struct {
	initial    time.Duration
	max        time.Duration
	multiplier float64
	jitter     float64
}

// delay before retry number attempt (0 for the first retry after a break).
func (policy backoffPolicy) delay(attempt int, random func() float64) time.Duration {
	base := float64(policy.initial) * math.Pow(policy.multiplier, float64(min(attempt, 64)))
	base = math.Min(base, float64(policy.max))
	spread := base * policy.jitter
	return time.Duration(math.Max(0, base-spread+2*spread*random()))
}

func defaultRandom() float64 { return rand.Float64() }
