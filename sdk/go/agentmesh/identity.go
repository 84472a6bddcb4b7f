package agentmesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
	"github.com/agentmesh/agentmesh/sdk/go/signing"
)

// JoinConfig is what a program without a sidecar needs to join the mesh.
type JoinConfig struct {
	// Address of the control plane, host:port.
	Address string
	// TrustBundlePEM verifies the server on first contact (the mesh CA
	// certificate, ca.pem from `agentmesh ctl init-admin`).
	TrustBundlePEM []byte
	// SpiffeID asked for: spiffe://<td>/agent/<name> for a name the join token
	// allows, or spiffe://<td>/sidecar/<host> for the token's host.
	SpiffeID string
	// JoinToken from `agentmesh ctl join-token`; spent on the first certificate.
	JoinToken string
	// TTL asks for a certificate lifetime (0 = the server's default; the server caps it).
	TTL time.Duration
	// Logger for renewals (default slog.Default()).
	Logger *slog.Logger
	// DialOptions are added to every connection to the server.
	DialOptions []grpc.DialOption
}

// Identity is a mesh identity held in this process: an ECDSA P-256 key that
// never leaves it and a short-lived certificate from the mesh CA, renewed over
// mTLS at half-life (a new key each time) without dropping connections.
type Identity struct {
	spiffeID SpiffeID
	config   JoinConfig
	log      *slog.Logger
	mu       sync.RWMutex
	current  *issued
	roots    *x509.CertPool
	renewed  chan struct{} // closed and replaced on every renewal
	stop     context.CancelFunc
	stopped  chan struct{}
}

// issued is one certificate with its key.
type issued struct {
	key        *ecdsa.PrivateKey
	chain      [][]byte // DER, leaf first
	leaf       *x509.Certificate
	tls        tls.Certificate
	expiresAt  time.Time
	receivedAt time.Time
	serial     string
}

// Join exchanges a join token for a certificate (IssueCertificate with a CSR
// over TLS that verifies the server by SPIFFE ID) and keeps it renewed until Close.
func Join(ctx context.Context, config JoinConfig) (*Identity, error) {
	id, err := ParseSpiffeID(config.SpiffeID)
	if err != nil {
		return nil, err
	}
	if config.JoinToken == "" {
		return nil, fmt.Errorf("%w: join token required", ErrInvalidArgument)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(config.TrustBundlePEM) {
		return nil, fmt.Errorf("%w: trust bundle holds no PEM certificate", ErrInvalidArgument)
	}
	log := config.Logger
	if log == nil {
		log = slog.Default()
	}
	identity := &Identity{spiffeID: id, config: config, log: log.With("component", "agentmesh-identity", "spiffeId", id.String()), roots: roots, renewed: make(chan struct{}), stopped: make(chan struct{})}
	first, err := identity.requestCertificate(ctx, config.JoinToken)
	if err != nil {
		return nil, err
	}
	identity.current = first
	renewCtx, stop := context.WithCancel(context.Background())
	identity.stop = stop
	go identity.keepRenewed(renewCtx)
	return identity, nil
}

// SpiffeID is the identity's SPIFFE ID.
func (i *Identity) SpiffeID() SpiffeID { return i.spiffeID }

// Serial is the current certificate's serial (lower-case hex).
func (i *Identity) Serial() string { return i.issued().serial }

// ExpiresAt is when the current certificate expires.
func (i *Identity) ExpiresAt() time.Time { return i.issued().expiresAt }

// Renewed is closed at the next renewal.
func (i *Identity) Renewed() <-chan struct{} {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.renewed
}

// Close stops renewing.
func (i *Identity) Close() {
	i.stop()
	<-i.stopped
}

func (i *Identity) issued() *issued {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.current
}

// Sign signs payload bytes as they will be sent (docs/signing.md) with the
// current key; the certificate chain travels along, so a receiver that saw an
// older certificate in its TLS handshake accepts a renewed key at once.
func (i *Identity) Sign(payload []byte, method, payloadType, audience string) (*agentmeshv1.SignedEnvelope, error) {
	current := i.issued()
	return signing.Sign(signing.SignInput{
		Payload: payload, Signer: i.spiffeID.String(), Audience: audience, Method: method,
		PayloadType: payloadType, Key: current.key, SignerChain: current.chain,
	})
}

// ServerAudience is the audience of envelopes meant for any server replica.
func (i *Identity) ServerAudience() string {
	return "spiffe://" + i.spiffeID.TrustDomain + "/server"
}

// TransportCredentials are mTLS credentials presenting the current certificate
// (renewals apply to new connections) and accepting only a peer whose
// certificate chains to the mesh CA and names spiffe://<td>/<expectedKind>/...
// (SPIFFE X509-SVID verification: peers are checked by identity, not host name).
func (i *Identity) TransportCredentials(expectedKind string) credentials.TransportCredentials {
	return credentials.NewTLS(i.tlsConfig(expectedKind, true))
}

func (i *Identity) tlsConfig(expectedKind string, presentCertificate bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Go would check a host name; mesh peers are checked by SPIFFE ID below instead.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			return i.verifyPeer(rawCerts, expectedKind)
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if !presentCertificate {
				return &tls.Certificate{}, nil
			}
			return &i.issued().tls, nil
		},
	}
}

func (i *Identity) verifyPeer(rawCerts [][]byte, expectedKind string) error {
	if len(rawCerts) == 0 {
		return errors.New("agentmesh: peer presented no certificate")
	}
	certificates := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		certificate, err := x509.ParseCertificate(raw)
		if err != nil {
			return fmt.Errorf("agentmesh: peer certificate unreadable: %w", err)
		}
		certificates = append(certificates, certificate)
	}
	intermediates := x509.NewCertPool()
	for _, certificate := range certificates[1:] {
		intermediates.AddCert(certificate)
	}
	i.mu.RLock()
	roots := i.roots
	i.mu.RUnlock()
	if _, err := certificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("agentmesh: peer certificate not issued by the mesh CA: %w", err)
	}
	id, err := spiffeIDOf(certificates[0])
	if err != nil {
		return fmt.Errorf("agentmesh: peer: %w", err)
	}
	if id.TrustDomain != i.spiffeID.TrustDomain || id.Kind != expectedKind {
		return fmt.Errorf("agentmesh: peer %s is not a %s of trust domain %s", id, expectedKind, i.spiffeID.TrustDomain)
	}
	return nil
}

// requestCertificate sends a CSR for a fresh key: with the join token over
// server-authenticated TLS the first time, over mTLS with the current
// certificate for renewals.
func (i *Identity) requestCertificate(ctx context.Context, joinToken string) (*issued, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	uri, _ := url.Parse(i.spiffeID.String())
	// The CA takes the identity from spiffe_id and checks the CSR's signature (proof
	// of possession); the SAN here is informative only.
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: i.spiffeID.Name}, URIs: []*url.URL{uri}}, key)
	if err != nil {
		return nil, err
	}
	transport := credentials.NewTLS(i.tlsConfig("server", joinToken == ""))
	conn, err := grpc.NewClient(i.config.Address, append([]grpc.DialOption{grpc.WithTransportCredentials(transport)}, i.config.DialOptions...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: server address %q: %v", ErrInvalidArgument, i.config.Address, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	response, err := agentmeshv1.NewIdentityServiceClient(conn).IssueCertificate(ctx, &agentmeshv1.IssueCertificateRequest{
		CsrPem:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
		JoinToken:  joinToken,
		SpiffeId:   i.spiffeID.String(),
		TtlSeconds: uint32(i.config.TTL / time.Second),
	})
	if err != nil {
		return nil, FromError(err)
	}
	return i.accept(response, key)
}

func (i *Identity) accept(response *agentmeshv1.IssueCertificateResponse, key *ecdsa.PrivateKey) (*issued, error) {
	var chain [][]byte
	for _, text := range response.GetCertificateChainPem() {
		rest := []byte(text)
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			chain = append(chain, block.Bytes)
		}
	}
	if len(chain) == 0 {
		return nil, &Error{Code: codes.Internal, Message: "server returned no certificate"}
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("agentmesh: issued certificate unreadable: %w", err)
	}
	if id, err := spiffeIDOf(leaf); err != nil || id != i.spiffeID {
		return nil, fmt.Errorf("agentmesh: issued certificate names %v, asked for %s", id, i.spiffeID)
	}
	if bundle := response.GetTrustBundlePem(); len(bundle) > 0 {
		roots := x509.NewCertPool()
		for _, text := range bundle {
			roots.AppendCertsFromPEM([]byte(text))
		}
		i.mu.Lock()
		i.roots = roots
		i.mu.Unlock()
	}
	return &issued{
		key:        key,
		chain:      chain,
		leaf:       leaf,
		tls:        tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		expiresAt:  time.UnixMilli(response.GetExpiresAtMs()),
		receivedAt: time.Now(),
		serial:     response.GetSerial(),
	}, nil
}

// renewalDelay: half the lifetime minus up to 10 % of it (so a fleet issued
// together does not renew together), counted from arrival rather than from
// notBefore, which the CA backdates for clock skew.
func renewalDelay(current *issued, now time.Time, random func() float64) time.Duration {
	start := current.leaf.NotBefore
	if current.receivedAt.After(start) {
		start = current.receivedAt
	}
	lifetime := current.expiresAt.Sub(start)
	renewAt := start.Add(lifetime/2 - time.Duration(random()*float64(lifetime)*0.1))
	return max(0, renewAt.Sub(now))
}

func (i *Identity) keepRenewed(ctx context.Context) {
	defer close(i.stopped)
	retry := backoffPolicy{initial: 200 * time.Millisecond, max: 30 * time.Second, multiplier: 2, jitter: 0.2}
	failures := 0
	delay := renewalDelay(i.issued(), time.Now(), defaultRandom)
	for {
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-timer.C:
		}
		next, err := i.requestCertificate(ctx, "")
		if err != nil {
			delay = retry.delay(failures, defaultRandom)
			failures++
			i.log.Warn("certificate renewal failed", "err", err, "retryInMs", delay.Milliseconds())
			continue
		}
		failures = 0
		i.mu.Lock()
		i.current = next
		close(i.renewed)
		i.renewed = make(chan struct{})
		i.mu.Unlock()
		i.log.Info("certificate renewed", "serial", next.serial, "expiresAt", next.expiresAt)
		delay = renewalDelay(next, time.Now(), defaultRandom)
	}
}
