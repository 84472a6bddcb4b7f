package agentmesh

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"strings"
)

// SpiffeID is a parsed mesh identity: spiffe://<trust domain>/<kind>/<name>,
// kind being agent, sidecar, server or admin.
type SpiffeID struct {
	TrustDomain string
	Kind        string
	Name        string
}

func (id SpiffeID) String() string {
	return "spiffe://" + id.TrustDomain + "/" + id.Kind + "/" + id.Name
}

// ParseSpiffeID reads a mesh SPIFFE ID.
func ParseSpiffeID(text string) (SpiffeID, error) {
	parsed, err := url.Parse(text)
	if err != nil || parsed.Scheme != "spiffe" || parsed.Host == "" || parsed.User != nil || parsed.RawQuery != "" || parsed.Fragment != "" {
		return SpiffeID{}, fmt.Errorf("%w: %q is not a SPIFFE ID", ErrInvalidArgument, text)
	}
	kind, name, found := strings.Cut(strings.TrimPrefix(parsed.Path, "/"), "/")
	switch {
	case !found || name == "" || strings.Contains(name, "/"):
		return SpiffeID{}, fmt.Errorf("%w: %q is not spiffe://<trust domain>/<kind>/<name>", ErrInvalidArgument, text)
	case kind != "agent" && kind != "sidecar" && kind != "server" && kind != "admin":
		return SpiffeID{}, fmt.Errorf("%w: %q: kind must be agent, sidecar, server or admin", ErrInvalidArgument, text)
	}
	return SpiffeID{TrustDomain: parsed.Host, Kind: kind, Name: name}, nil
}

// spiffeIDOf reads the single SPIFFE URI SAN of a certificate (SPIFFE X509-SVID).
func spiffeIDOf(certificate *x509.Certificate) (SpiffeID, error) {
	if len(certificate.URIs) != 1 {
		return SpiffeID{}, fmt.Errorf("certificate carries %d URI SANs, want exactly one SPIFFE ID", len(certificate.URIs))
	}
	return ParseSpiffeID(certificate.URIs[0].String())
}
