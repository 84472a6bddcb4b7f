package agentmesh

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	certificate *x509.Certificate
	key         *ecdsa.PrivateKey
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test mesh CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certificate, _ := x509.ParseCertificate(der)
	return testCA{certificate, key}
}

func (ca testCA) leaf(t *testing.T, uris ...string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var parsed []*url.URL
	for _, uri := range uris {
		value, _ := url.Parse(uri)
		parsed = append(parsed, value)
	}
	template := &x509.Certificate{
		SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, URIs: parsed,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, ca.certificate, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestPeersAreCheckedBySpiffeIDAndChain(t *testing.T) {
	meshCA, foreignCA := newTestCA(t), newTestCA(t)
	roots := x509.NewCertPool()
	roots.AddCert(meshCA.certificate)
	identity := &Identity{spiffeID: SpiffeID{TrustDomain: "mesh.local", Kind: "agent", Name: "script"}, roots: roots}
	cases := []struct {
		name   string
		chain  [][]byte
		reason string
	}{
		{"mesh server", [][]byte{meshCA.leaf(t, "spiffe://mesh.local/server/s1")}, ""},
		{"another CA", [][]byte{foreignCA.leaf(t, "spiffe://mesh.local/server/s1")}, "not issued by the mesh CA"},
		{"a sidecar", [][]byte{meshCA.leaf(t, "spiffe://mesh.local/sidecar/host-a")}, "is not a server"},
		{"another trust domain", [][]byte{meshCA.leaf(t, "spiffe://other.local/server/s1")}, "is not a server of trust domain mesh.local"},
		{"two SPIFFE IDs", [][]byte{meshCA.leaf(t, "spiffe://mesh.local/server/s1", "spiffe://mesh.local/admin/x")}, "exactly one"},
		{"no SPIFFE ID", [][]byte{meshCA.leaf(t)}, "exactly one"},
		{"nothing", nil, "no certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := identity.verifyPeer(tc.chain, "server")
			if tc.reason == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("got %v, want %q", err, tc.reason)
			}
		})
	}
}

func TestParseSpiffeID(t *testing.T) {
	id, err := ParseSpiffeID("spiffe://mesh.local/agent/summarizer")
	if err != nil || id != (SpiffeID{"mesh.local", "agent", "summarizer"}) || id.String() != "spiffe://mesh.local/agent/summarizer" {
		t.Fatalf("got %v %v", id, err)
	}
	for _, bad := range []string{"", "https://mesh.local/agent/x", "spiffe:///agent/x", "spiffe://mesh.local/agent", "spiffe://mesh.local/agent/", "spiffe://mesh.local/robot/x", "spiffe://mesh.local/agent/x/y", "spiffe://mesh.local/agent/x?q=1"} {
		if _, err := ParseSpiffeID(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}

func TestRenewalComesBeforeHalfLifeCountedFromArrival(t *testing.T) {
	arrived := time.Unix(1_000_000, 0)
	current := &issued{
		// The CA backdates notBefore; half-life counts from arrival, or a short certificate would renew at once.
		leaf:       &x509.Certificate{NotBefore: arrived.Add(-5 * time.Minute)},
		receivedAt: arrived,
		expiresAt:  arrived.Add(10 * time.Second),
	}
	if got := renewalDelay(current, arrived, func() float64 { return 0 }); got != 5*time.Second {
		t.Fatalf("delay %v", got)
	}
	if got := renewalDelay(current, arrived, func() float64 { return 1 }); got != 4*time.Second {
		t.Fatalf("jittered delay %v", got)
	}
	if got := renewalDelay(current, arrived.Add(time.Minute), func() float64 { return 0 }); got != 0 {
		t.Fatalf("overdue delay %v", got)
	}
}

func TestBackoffGrowsToItsCeilingWithinTheJitter(t *testing.T) {
	policy := backoffPolicy{initial: 50 * time.Millisecond, max: 2 * time.Second, multiplier: 2, jitter: 0.2}
	low, high := func() float64 { return 0 }, func() float64 { return 1 }
	if policy.delay(0, low) != 40*time.Millisecond || policy.delay(0, high) != 60*time.Millisecond {
		t.Fatalf("first delay %v..%v", policy.delay(0, low), policy.delay(0, high))
	}
	if policy.delay(3, low) != 320*time.Millisecond {
		t.Fatalf("fourth delay %v", policy.delay(3, low))
	}
	if policy.delay(1000, high) != 2400*time.Millisecond {
		t.Fatalf("capped delay %v", policy.delay(1000, high))
	}
}
