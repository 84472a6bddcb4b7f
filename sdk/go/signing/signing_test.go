package signing_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
	"github.com/agentmesh/agentmesh/sdk/go/signing"
)

// The shared vectors (docs/signing.md §6); every SDK checks the same file.
type vectorFile struct {
	Domain   string               `json:"domain"`
	WindowMs int64                `json:"windowMs"`
	Keys     map[string]vectorKey `json:"keys"`
	Valid    []validVector        `json:"valid"`
	Invalid  []invalidVector      `json:"invalid"`
}

type vectorKey struct {
	Alg              string `json:"alg"`
	PrivateKeyPkcs8  string `json:"privateKeyPkcs8Pem"`
	PublicKeySpkiPem string `json:"publicKeySpkiPem"`
}

type vectorEnvelope struct {
	Alg          string `json:"alg"`
	Signer       string `json:"signer"`
	Audience     string `json:"audience"`
	Method       string `json:"method"`
	PayloadType  string `json:"payloadType"`
	PayloadHex   string `json:"payloadHex"`
	IssuedAtMs   int64  `json:"issuedAtMs"`
	NonceHex     string `json:"nonceHex"`
	SignatureHex string `json:"signatureHex"`
}

type validVector struct {
	vectorEnvelope
	Name                   string `json:"name"`
	Key                    string `json:"key"`
	NowMs                  int64  `json:"nowMs"`
	PayloadSha256Hex       string `json:"payloadSha256Hex"`
	CanonicalHex           string `json:"canonicalHex"`
	SignatureDeterministic bool   `json:"signatureDeterministic"`
}

type invalidVector struct {
	Name          string            `json:"name"`
	Key           string            `json:"key"`
	Envelope      vectorEnvelope    `json:"envelope"`
	ExpectedRaw   map[string]string `json:"expected"`
	NowMs         int64             `json:"nowMs"`
	ExpectedError string            `json:"expectedError"`
}

func loadVectors(t *testing.T) vectorFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "test", "vectors", "signing.json"))
	if err != nil {
		t.Fatal(err)
	}
	var file vectorFile
	if err := json.Unmarshal(raw, &file); err != nil {
		t.Fatal(err)
	}
	if file.Domain != signing.Domain || file.WindowMs != signing.DefaultWindow.Milliseconds() {
		t.Fatalf("vector file speaks domain %q window %d", file.Domain, file.WindowMs)
	}
	return file
}

func unhex(t *testing.T, text string) []byte {
	t.Helper()
	out, err := hex.DecodeString(text)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func privateKey(t *testing.T, key vectorKey) crypto.Signer {
	t.Helper()
	block, _ := pem.Decode([]byte(key.PrivateKeyPkcs8))
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return parsed.(crypto.Signer)
}

func publicKey(t *testing.T, key vectorKey) crypto.PublicKey {
	t.Helper()
	block, _ := pem.Decode([]byte(key.PublicKeySpkiPem))
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

func (v vectorEnvelope) envelope(t *testing.T) *agentmeshv1.SignedEnvelope {
	return &agentmeshv1.SignedEnvelope{
		Payload:     unhex(t, v.PayloadHex),
		Signer:      v.Signer,
		Alg:         v.Alg,
		Signature:   unhex(t, v.SignatureHex),
		IssuedAtMs:  v.IssuedAtMs,
		Nonce:       unhex(t, v.NonceHex),
		Audience:    v.Audience,
		Method:      v.Method,
		PayloadType: v.PayloadType,
	}
}

func clockAt(ms int64) func() time.Time { return func() time.Time { return time.UnixMilli(ms) } }

func expectedOf(v vectorEnvelope) signing.Expected {
	return signing.Expected{Signer: v.Signer, Audience: v.Audience, Method: v.Method, PayloadType: v.PayloadType}
}

func TestValidVectors(t *testing.T) {
	file := loadVectors(t)
	for _, vector := range file.Valid {
		t.Run(vector.Name, func(t *testing.T) {
			key := file.Keys[vector.Key]
			envelope := vector.envelope(t)
			canonical, err := signing.Canonical(signing.Fields{
				Signer: vector.Signer, Audience: vector.Audience, Method: vector.Method, PayloadType: vector.PayloadType,
				IssuedAtMs: vector.IssuedAtMs, Nonce: envelope.Nonce,
			}, envelope.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(canonical); got != vector.CanonicalHex {
				t.Fatalf("canonical bytes differ:\n got %s\nwant %s", got, vector.CanonicalHex)
			}
			if !bytes.Contains(canonical, unhex(t, vector.PayloadSha256Hex)) {
				t.Fatal("canonical bytes do not carry the payload digest")
			}
			options := signing.VerifyOptions{PublicKey: publicKey(t, key), Expected: expectedOf(vector.vectorEnvelope), Now: clockAt(vector.NowMs)}
			if err := signing.Verify(envelope, options); err != nil {
				t.Fatalf("vector does not verify: %v", err)
			}

			signed, err := signing.Sign(signing.SignInput{
				Payload: envelope.Payload, Signer: vector.Signer, Audience: vector.Audience, Method: vector.Method,
				PayloadType: vector.PayloadType, Key: privateKey(t, key), Now: clockAt(vector.IssuedAtMs), Nonce: envelope.Nonce,
			})
			if err != nil {
				t.Fatal(err)
			}
			if signed.Alg != vector.Alg {
				t.Fatalf("alg %q, want %q", signed.Alg, vector.Alg)
			}
			if vector.SignatureDeterministic && hex.EncodeToString(signed.Signature) != vector.SignatureHex {
				t.Fatalf("deterministic signature differs:\n got %x\nwant %s", signed.Signature, vector.SignatureHex)
			}
			if err := signing.Verify(signed, options); err != nil {
				t.Fatalf("our own signature does not verify: %v", err)
			}
		})
	}
}

func TestInvalidVectors(t *testing.T) {
	file := loadVectors(t)
	for _, vector := range file.Invalid {
		t.Run(vector.Name, func(t *testing.T) {
			expected := signing.Expected{
				Signer: vector.ExpectedRaw["signer"], Audience: vector.ExpectedRaw["audience"],
				Method: vector.ExpectedRaw["method"], PayloadType: vector.ExpectedRaw["payloadType"],
			}
			err := signing.Verify(vector.Envelope.envelope(t), signing.VerifyOptions{
				PublicKey: publicKey(t, file.Keys[vector.Key]), Expected: expected, Now: clockAt(vector.NowMs),
			})
			var failure *signing.VerifyError
			if !errors.As(err, &failure) || failure.Reason != vector.ExpectedError {
				t.Fatalf("got %v, want %q", err, vector.ExpectedError)
			}
		})
	}
}

func TestReplayedNonceIsRejectedOnlyAfterAValidSignature(t *testing.T) {
	file := loadVectors(t)
	nonces := signing.NewNonceCache()
	for _, vector := range file.Valid {
		options := signing.VerifyOptions{
			PublicKey: publicKey(t, file.Keys[vector.Key]), Expected: expectedOf(vector.vectorEnvelope),
			Now: clockAt(vector.NowMs), Nonces: nonces,
		}
		forged := vector.envelope(t)
		forged.Signature = bytes.Repeat([]byte{1}, 64)
		if err := signing.Verify(forged, options); !errors.Is(err, signing.ErrSignatureInvalid) {
			t.Fatalf("%s: forged copy: got %v", vector.Name, err)
		}
		if err := signing.Verify(vector.envelope(t), options); err != nil {
			t.Fatalf("%s: first delivery: %v (a forgery must not burn the nonce)", vector.Name, err)
		}
		if err := signing.Verify(vector.envelope(t), options); !errors.Is(err, signing.ErrNonceReplayed) {
			t.Fatalf("%s: replay: got %v", vector.Name, err)
		}
	}
}

func TestSignRefusesUnsupportedKeys(t *testing.T) {
	if _, err := signing.Sign(signing.SignInput{Payload: []byte("x")}); err == nil {
		t.Fatal("signing without a key succeeded")
	}
}
