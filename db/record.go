package db

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Record is ToolDb's VerificationData, the unit that is signed, stored and replicated:
//
//	{"k":key,"a":address,"n":nonce,"t":millis,"h":sha256hex,"s":sigHex,"v":value,"c":null|"MAP"|"LIST"|"COUNTER"}
//
// h = hex(sha256(v + a + decimal(t) + decimal(n))) over v's JSON bytes exactly as received, and
// s is the P-256 signature (raw r||s, hex) of the 64 ASCII characters of h. For a CRDT, v is
// the writer's full change list.
type Record struct {
	Key    string          // k: the full key, namespace prefix included
	Author string          // a: the writer's 86-character address
	Nonce  int64           // n: proof-of-work nonce
	Time   int64           // t: creation time, milliseconds since the Unix epoch
	Hash   string          // h: lowercase hex sha256
	Sig    string          // s: 128 hex characters, r||s
	Value  json.RawMessage // v: compact JSON, never re-encoded
	CRDT   string          // c: "" for null (a plain value), else the CRDT type name
}

// ParseRecord decodes one record from JSON. All eight fields must be present (c may be null);
// t and n must be integers. v is kept byte for byte apart from insignificant whitespace, which is
// what JSON.stringify leaves out too. A repeated field keeps its last value, as JSON.parse does.
func ParseRecord(b []byte) (Record, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return Record{}, fmt.Errorf("%w: not a JSON object", ErrMalformed)
	}
	var r Record
	for _, f := range [...]string{"k", "a", "n", "t", "h", "s", "v", "c"} {
		if _, ok := m[f]; !ok {
			return Record{}, fmt.Errorf("%w: %q", ErrMissingField, f)
		}
	}
	var err error
	if r.Key, err = jsonString(m["k"], "k"); err != nil {
		return Record{}, err
	}
	if r.Author, err = jsonString(m["a"], "a"); err != nil {
		return Record{}, err
	}
	if r.Hash, err = jsonString(m["h"], "h"); err != nil {
		return Record{}, err
	}
	if r.Sig, err = jsonString(m["s"], "s"); err != nil {
		return Record{}, err
	}
	if r.Nonce, err = jsonInt(m["n"], "n"); err != nil {
		return Record{}, err
	}
	if r.Time, err = jsonInt(m["t"], "t"); err != nil {
		return Record{}, err
	}
	if c := m["c"]; string(c) != "null" {
		if r.CRDT, err = jsonString(c, "c"); err != nil {
			return Record{}, err
		}
		if r.CRDT == "" {
			return Record{}, fmt.Errorf("%w: empty c", ErrMalformed)
		}
	}
	var buf bytes.Buffer
	buf.Grow(len(m["v"]))
	if err := json.Compact(&buf, m["v"]); err != nil {
		return Record{}, fmt.Errorf("%w: v: %v", ErrMalformed, err)
	}
	r.Value = buf.Bytes()
	return r, nil
}

func jsonString(raw json.RawMessage, field string) (string, error) {
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("%w: %s is not a string", ErrMalformed, field)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMalformed, field, err)
	}
	return s, nil
}

// jsonInt accepts a JSON integer (no fraction, no exponent), the only form JavaScript prints
// for the integers ToolDb puts in t and n.
func jsonInt(raw json.RawMessage, field string) (int64, error) {
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s is not an integer", ErrMalformed, field)
	}
	return n, nil
}

// AppendRecord appends r as ToolDb's JSON, fields in ToolDb's order k,a,n,t,h,s,v,c, with
// "c":null for plain values and v copied verbatim.
func AppendRecord(b []byte, r *Record) []byte {
	b = append(b, `{"k":`...)
	b = AppendJSString(b, r.Key)
	b = append(b, `,"a":`...)
	b = AppendJSString(b, r.Author)
	b = append(b, `,"n":`...)
	b = strconv.AppendInt(b, r.Nonce, 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, r.Time, 10)
	b = append(b, `,"h":`...)
	b = AppendJSString(b, r.Hash)
	b = append(b, `,"s":`...)
	b = AppendJSString(b, r.Sig)
	b = append(b, `,"v":`...)
	if len(r.Value) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Value...)
	}
	b = append(b, `,"c":`...)
	if r.CRDT == "" {
		b = append(b, "null"...)
	} else {
		b = AppendJSString(b, r.CRDT)
	}
	return append(b, '}')
}

// MarshalJSON encodes r as AppendRecord does.
func (r Record) MarshalJSON() ([]byte, error) { return AppendRecord(nil, &r), nil }

// UnmarshalJSON decodes r as ParseRecord does.
func (r *Record) UnmarshalJSON(b []byte) error {
	p, err := ParseRecord(b)
	if err != nil {
		return err
	}
	*r = p
	return nil
}

// ComputeHash returns ToolDb's record hash: lowercase hex sha256 of v + a + t + n as one string.
func ComputeHash(value []byte, author string, t, nonce int64) string {
	h := sha256.New()
	var num [20]byte
	h.Write(value)
	h.Write([]byte(author))
	h.Write(strconv.AppendInt(num[:0], t, 10))
	h.Write(strconv.AppendInt(num[:0], nonce, 10))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// hasProofOfWork reports whether h starts with pow '0' hex digits (ToolDb counts hex digits,
// not bits).
func hasProofOfWork(h string, pow int) bool {
	if pow <= 0 {
		return true
	}
	return len(h) >= pow && strings.Count(h[:pow], "0") == pow
}

// solveProofOfWork finds the smallest nonce whose hash has pow leading zero hex digits, as
// ToolDb's proofOfWork does.
func solveProofOfWork(value []byte, author string, t int64, pow int) (nonce int64, hash string) {
	for n := int64(0); ; n++ {
		h := ComputeHash(value, author, t, n)
		if hasProofOfWork(h, pow) {
			return n, h
		}
	}
}

// Key namespaces (ToolDb's): "==name" is frozen (the oldest writer owns it), ":<address>.<key>"
// may only be written by that address.
const (
	frozenPrefix = "=="
	userPrefix   = ":"
)

// IsFrozenKey reports whether k is in the frozen "==" namespace.
func IsFrozenKey(k string) bool { return strings.HasPrefix(k, frozenPrefix) }

// KeyOwner returns the address a ":<address>.<key>" key belongs to, as ToolDb computes it
// (k.split(".")[0].slice(1)), and false for keys outside the user namespace.
func KeyOwner(k string) (string, bool) {
	if !strings.HasPrefix(k, userPrefix) {
		return "", false
	}
	owner, _, _ := strings.Cut(k[1:], ".")
	return owner, true
}

// UserKey returns the key ":<address>.<key>" that only address may write.
func UserKey(address, key string) string { return userPrefix + address + "." + key }
