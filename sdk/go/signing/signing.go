// Package signing implements agentmesh signed envelopes (agentmesh-sig-v1,
// docs/signing.md): the canonical bytes, ES256 and Ed25519 signatures, and the
// receiver's checks in the order the specification fixes. It passes the shared
// vectors in test/vectors/signing.json byte for byte.
package signing

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"
	"time"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

// Domain is the prefix of every signed byte string.
const Domain = "agentmesh-sig-v1"

// NonceBytes is the exact nonce length.
const NonceBytes = 16

// DefaultWindow is how far issued_at may be from the receiver's clock, either way.
const DefaultWindow = 30 * time.Second

// Signature algorithms (the envelope's alg field, case-sensitive).
const (
	AlgES256   = "ES256"
	AlgEd25519 = "Ed25519"
)

// VerifyError is a failed check; Reason is one of the short reasons of
// docs/signing.md §5, which receivers answer with gRPC UNAUTHENTICATED.
type VerifyError struct{ Reason string }

func (e *VerifyError) Error() string { return "envelope rejected: " + e.Reason }

// Is makes errors.Is(err, ErrSignatureInvalid) and friends work.
func (e *VerifyError) Is(target error) bool {
	other, ok := target.(*VerifyError)
	return ok && other.Reason == e.Reason
}

// The reasons of docs/signing.md §5, in the order they are checked.
var (
	ErrUnsupportedAlg         = &VerifyError{"unsupported signature algorithm"}
	ErrBadNonceLength         = &VerifyError{"nonce must be 16 bytes"}
	ErrSignerMismatch         = &VerifyError{"signer mismatch"}
	ErrAudienceMismatch       = &VerifyError{"audience mismatch"}
	ErrMethodMismatch         = &VerifyError{"method mismatch"}
	ErrPayloadTypeMismatch    = &VerifyError{"payload type mismatch"}
	ErrTimestampOutsideWindow = &VerifyError{"timestamp outside window"}
	ErrSignatureInvalid       = &VerifyError{"signature invalid"}
	ErrNonceReplayed          = &VerifyError{"nonce replayed"}
)

// Fields are what the signature covers besides the payload itself.
type Fields struct {
	Signer      string
	Audience    string
	Method      string
	PayloadType string
	IssuedAtMs  int64
	Nonce       []byte
}

// Canonical returns the bytes that are signed:
//
//	"agentmesh-sig-v1" || lp(signer) || lp(audience) || lp(method) || lp(payload_type)
//	|| u64be(issued_at_ms) || lp(nonce) || lp(sha256(payload))
//
// with lp(x) = u32be(len(x)) || x. Strings are taken as their UTF-8 bytes, unchanged.
func Canonical(fields Fields, payload []byte) ([]byte, error) {
	if fields.IssuedAtMs < 0 {
		return nil, errors.New("signing: issued_at_ms must not be negative")
	}
	digest := sha256.Sum256(payload)
	size := len(Domain) + 4*6 + len(fields.Signer) + len(fields.Audience) + len(fields.Method) +
		len(fields.PayloadType) + 8 + len(fields.Nonce) + len(digest)
	out := make([]byte, 0, size)
	out = append(out, Domain...)
	out = appendLengthPrefixed(out, []byte(fields.Signer))
	out = appendLengthPrefixed(out, []byte(fields.Audience))
	out = appendLengthPrefixed(out, []byte(fields.Method))
	out = appendLengthPrefixed(out, []byte(fields.PayloadType))
	out = binary.BigEndian.AppendUint64(out, uint64(fields.IssuedAtMs))
	out = appendLengthPrefixed(out, fields.Nonce)
	out = appendLengthPrefixed(out, digest[:])
	return out, nil
}

func appendLengthPrefixed(out, value []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(value)))
	return append(out, value...)
}

// AlgForKey names the algorithm a private or public key signs with, or "" when
// agentmesh does not support the key (only ECDSA P-256 and Ed25519).
func AlgForKey(key any) string {
	switch typed := key.(type) {
	case *ecdsa.PrivateKey:
		return AlgForKey(&typed.PublicKey)
	case *ecdsa.PublicKey:
		if typed.Curve == elliptic.P256() {
			return AlgES256
		}
	case ed25519.PrivateKey, ed25519.PublicKey:
		return AlgEd25519
	}
	return ""
}

// SignInput is one envelope to sign.
type SignInput struct {
	// Payload is the exact bytes that will be sent; never re-encode them afterwards.
	Payload     []byte
	Signer      string
	Audience    string
	Method      string
	PayloadType string
	// Key is an *ecdsa.PrivateKey on P-256 (ES256) or an ed25519.PrivateKey.
	Key crypto.Signer
	// Now defaults to time.Now; Rand (nonce and ECDSA randomness) to crypto/rand.
	Now  func() time.Time
	Rand io.Reader
	// SignerChain is the DER chain, leaf first, for receivers that lack it from mTLS.
	SignerChain [][]byte
	// Nonce, when set, is used instead of a fresh one (test vectors only: never reuse a nonce).
	Nonce []byte
}

// Sign builds a SignedEnvelope (docs/signing.md §4).
func Sign(input SignInput) (*agentmeshv1.SignedEnvelope, error) {
	alg := AlgForKey(input.Key)
	if alg == "" {
		return nil, errors.New("signing: key must be an ECDSA P-256 or Ed25519 private key")
	}
	random := input.Rand
	if random == nil {
		random = rand.Reader
	}
	nonce := input.Nonce
	if nonce == nil {
		nonce = make([]byte, NonceBytes)
		if _, err := io.ReadFull(random, nonce); err != nil {
			return nil, fmt.Errorf("signing: nonce: %w", err)
		}
	}
	if len(nonce) != NonceBytes {
		return nil, ErrBadNonceLength
	}
	now := time.Now
	if input.Now != nil {
		now = input.Now
	}
	fields := Fields{
		Signer:      input.Signer,
		Audience:    input.Audience,
		Method:      input.Method,
		PayloadType: input.PayloadType,
		IssuedAtMs:  now().UnixMilli(),
		Nonce:       nonce,
	}
	canonical, err := Canonical(fields, input.Payload)
	if err != nil {
		return nil, err
	}
	signature, err := signCanonical(alg, input.Key, canonical, random)
	if err != nil {
		return nil, err
	}
	return &agentmeshv1.SignedEnvelope{
		Payload:     input.Payload,
		Signer:      fields.Signer,
		Alg:         alg,
		Signature:   signature,
		IssuedAtMs:  fields.IssuedAtMs,
		Nonce:       nonce,
		Audience:    fields.Audience,
		Method:      fields.Method,
		PayloadType: fields.PayloadType,
		SignerChain: input.SignerChain,
	}, nil
}

func signCanonical(alg string, key crypto.Signer, canonical []byte, random io.Reader) ([]byte, error) {
	if alg == AlgEd25519 {
		// Pure Ed25519 over the message: no pre-hash (crypto.Hash(0)).
		return key.Sign(random, canonical, crypto.Hash(0))
	}
	ecdsaKey, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("signing: ES256 needs an *ecdsa.PrivateKey")
	}
	digest := sha256.Sum256(canonical)
	r, s, err := ecdsa.Sign(random, ecdsaKey, digest[:])
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	// IEEE P1363: r || s, each left-padded to 32 bytes (not ASN.1 DER).
	signature := make([]byte, 64)
	r.FillBytes(signature[:32])
	s.FillBytes(signature[32:])
	return signature, nil
}

// Expected is what the receiver expects of an envelope.
type Expected struct {
	Signer      string
	Audience    string
	Method      string
	PayloadType string
}

// VerifyOptions configure Verify.
type VerifyOptions struct {
	// PublicKey of the signer: *ecdsa.PublicKey (P-256) or ed25519.PublicKey.
	PublicKey crypto.PublicKey
	Expected  Expected
	// Now is the receiver's clock (default time.Now); Window defaults to DefaultWindow.
	Now    func() time.Time
	Window time.Duration
	// Nonces, when set, rejects a (signer, nonce) accepted before within the window.
	Nonces *NonceCache
}

// Verify runs the checks of docs/signing.md §5 in order and returns the first
// failure as a *VerifyError. It never decodes the payload.
func Verify(envelope *agentmeshv1.SignedEnvelope, options VerifyOptions) error {
	alg := envelope.GetAlg()
	if alg != AlgES256 && alg != AlgEd25519 {
		return ErrUnsupportedAlg
	}
	if len(envelope.GetNonce()) != NonceBytes {
		return ErrBadNonceLength
	}
	expected := options.Expected
	switch {
	case envelope.GetSigner() != expected.Signer:
		return ErrSignerMismatch
	case envelope.GetAudience() != expected.Audience:
		return ErrAudienceMismatch
	case envelope.GetMethod() != expected.Method:
		return ErrMethodMismatch
	case envelope.GetPayloadType() != expected.PayloadType:
		return ErrPayloadTypeMismatch
	}
	now := time.Now
	if options.Now != nil {
		now = options.Now
	}
	window := options.Window
	if window == 0 {
		window = DefaultWindow
	}
	nowMs := now().UnixMilli()
	skewMs := nowMs - envelope.GetIssuedAtMs()
	if skewMs < 0 {
		skewMs = -skewMs
	}
	if envelope.GetIssuedAtMs() < 0 || skewMs > window.Milliseconds() {
		return ErrTimestampOutsideWindow
	}
	if !signatureValid(envelope, alg, options.PublicKey) {
		return ErrSignatureInvalid
	}
	if options.Nonces != nil && !options.Nonces.Accept(envelope.GetSigner(), envelope.GetNonce(), envelope.GetIssuedAtMs()+window.Milliseconds(), nowMs) {
		return ErrNonceReplayed
	}
	return nil
}

func signatureValid(envelope *agentmeshv1.SignedEnvelope, alg string, key crypto.PublicKey) bool {
	if AlgForKey(key) != alg || len(envelope.GetSignature()) != 64 {
		return false
	}
	canonical, err := Canonical(Fields{
		Signer:      envelope.GetSigner(),
		Audience:    envelope.GetAudience(),
		Method:      envelope.GetMethod(),
		PayloadType: envelope.GetPayloadType(),
		IssuedAtMs:  envelope.GetIssuedAtMs(),
		Nonce:       envelope.GetNonce(),
	}, envelope.GetPayload())
	if err != nil {
		return false
	}
	signature := envelope.GetSignature()
	if alg == AlgEd25519 {
		return ed25519.Verify(key.(ed25519.PublicKey), canonical, signature)
	}
	digest := sha256.Sum256(canonical)
	r := new(big.Int).SetBytes(signature[:32])
	s := new(big.Int).SetBytes(signature[32:])
	return ecdsa.Verify(key.(*ecdsa.PublicKey), digest[:], r, s)
}

// NonceCache remembers accepted (signer, nonce) pairs until their envelopes can
// no longer pass the timestamp check. Safe for concurrent use.
type NonceCache struct {
	mu      sync.Mutex
	expires map[string]int64
	sweepAt int64
}

// NewNonceCache returns an empty cache.
func NewNonceCache() *NonceCache { return &NonceCache{expires: map[string]int64{}} }

// Accept records the pair, remembered through lastValidMs (issued_at + window),
// and reports whether it was new (or its earlier use can no longer be replayed).
func (c *NonceCache) Accept(signer string, nonce []byte, lastValidMs, nowMs int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if nowMs >= c.sweepAt {
		for key, expiry := range c.expires {
			if expiry < nowMs {
				delete(c.expires, key)
			}
		}
		c.sweepAt = nowMs + DefaultWindow.Milliseconds()
	}
	key := signer + "\x00" + string(nonce)
	// Both window edges accept, so a nonce stays remembered through its last acceptable millisecond.
	if expiry, seen := c.expires[key]; seen && expiry >= nowMs {
		return false
	}
	c.expires[key] = lastValidMs
	return true
}
