package bridge

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/swarmdb/swarmdb/db"
)

// Message types. The first twelve are ToolDb 2.6.6's (reference §2.2; "crdt" is declared there
// but never sent, so we refuse it). TypeError and TypeSync are ours: ToolDb peers ignore an
// error message, and swarmdbSync is only ever sent to peers that said "swarmdb" in ping/pong.
const (
	TypePing           = "ping"
	TypePong           = "pong"
	TypePut            = "put"
	TypeCRDTPut        = "crdtPut"
	TypeGet            = "get"
	TypeCRDTGet        = "crdtGet"
	TypeSubscribe      = "subscribe"
	TypeQuery          = "query"
	TypeQueryAck       = "queryAck"
	TypeFunction       = "function"
	TypeFunctionReturn = "functionReturn"
	TypeError          = "error"
	TypeSync           = "swarmdbSync"
)

// Function return codes (ToolDb's functionReturn.code).
const (
	CodeOK       = "OK"
	CodeErr      = "ERR"
	CodeNotFound = "NOT_FOUND"
)

// Wire bounds that hold whatever the Limits: ToolDb ids are 10 characters and client ids 20,
// so these leave room without letting a peer make us keep large strings.
const (
	maxIDLen    = 64
	maxToLen    = 64 // entries in a "to" list
	maxKeyLen   = 4096
	maxServers  = 64   // entries in pong.servers we look at
	maxSyncList = 4096 // entries in a swarmdbSync list
)

// PeerDesc is ToolDb's Peer: a node's signed self-description, sent in ping and in pong.servers.
// Sig is the peer account's signature over hex(sha256(topic-timestamp-host:port)).
type PeerDesc struct {
	Topic     string
	Timestamp int64
	Host      string
	Port      int64
	Address   string
	Sig       string
}

// Message is one protocol message. Which fields are meaningful depends on Type:
//
//	ping       {"type":"ping","id","to","isServer","clientId","peer":Peer[,"swarmdb":1]}
//	pong       {"type":"pong","id"(=ping id),"to","isServer","clientId","servers":[Peer...][,"peer":Peer,"swarmdb":1]}
//	put        {"type":"put","id","to","data":Record[,"catchup":true]}
//	crdtPut    {"type":"crdtPut","id","to","data":Record[,"catchup":true]}
//	get        {"type":"get","id","to","key"}          crdtGet, subscribe, query: the same
//	queryAck   {"type":"queryAck","id"(=query id),"to","keys":[...]}
//	function   {"type":"function","id","to","function","args"}
//	functionReturn {"type":"functionReturn","id","to","code","return"}
//	error      {"type":"error","id","to","code","error"[,"ref":offending id]}
//	swarmdbSync {"type":"swarmdbSync","id","to","op","path","sums":[[count,"hash"]...],"items":[["key","hash"]...],"keys":[...]}
type Message struct {
	Type string
	ID   string
	To   []string

	IsServer bool
	ClientID string
	Peer     *PeerDesc
	Servers  []PeerDesc
	Swarmdb  int // swarmdb protocol version in ping/pong; 0 for ToolDb peers

	Data    *db.Record
	Catchup bool // put/crdtPut sent by anti-entropy: stored, never relayed

	Key  string
	Keys []string

	Function string
	Args     json.RawMessage
	Code     string
	Return   json.RawMessage

	Error string
	Ref   string

	Sync *SyncBody
}

// SyncBody is the payload of a swarmdbSync message (see sync.go).
type SyncBody struct {
	Op    string     // "tree", "leaf", "want", "have", "ihave", "graft" or "prune"
	Path  string     // hex prefix of sha256(key) the message is about
	Sums  []SyncSum  // tree: one per child nibble, 16 entries
	Items []SyncItem // leaf: every key under Path with its item hash; have: keys and item hashes; ihave, graft: keys and put ids
	Keys  []string   // want: keys whose records the sender asks for
}

// SyncSum summarises one subtree: how many keys and the XOR of their item hashes (hex).
type SyncSum struct {
	Count int64
	Hash  string
}

// SyncItem is one key and its item hash (hex).
type SyncItem struct {
	Key  string
	Hash string
}

// ParseMessage decodes one message, strictly: it must be a JSON object no deeper than
// maxDepth (zero means DefaultMaxDepth), field names match exactly (encoding/json's
// case-insensitive matching is not used), every field the type needs must be present with the
// right JSON type, and records are parsed by db.ParseRecord. Unknown fields are ignored, as
// ToolDb ignores them.
func ParseMessage(b []byte, maxDepth int) (Message, error) {
	if maxDepth <= 0 {
		maxDepth = DefaultMaxDepth
	}
	if err := checkDepth(b, maxDepth); err != nil {
		return Message{}, err
	}
	var f map[string]json.RawMessage
	if err := json.Unmarshal(b, &f); err != nil || f == nil {
		return Message{}, fmt.Errorf("%w: not a JSON object", ErrBadMessage)
	}
	p := fieldParser{f: f}
	var m Message
	m.Type = p.str("type", true, 64)
	m.ID = p.str("id", true, maxIDLen)
	m.To = p.strs("to", false, maxToLen, maxIDLen)
	if p.err != nil {
		return Message{}, p.err
	}
	if m.ID == "" {
		return Message{}, fmt.Errorf("%w: empty id", ErrBadMessage)
	}
	switch m.Type {
	case TypePing, TypePong:
		m.IsServer = p.boolean("isServer")
		m.ClientID = p.str("clientId", true, maxIDLen)
		m.Swarmdb = int(p.integer("swarmdb", false))
		// ping must carry the sender's descriptor; a pong may (our extension: a swarmdb node in
		// client mode is not in its own servers list, which is where ToolDb's pong has it).
		m.Peer = p.peer("peer", m.Type == TypePing)
		if m.Type == TypePong {
			m.Servers = p.peers("servers")
		}
	case TypePut, TypeCRDTPut:
		raw, ok := f["data"]
		if !ok {
			return Message{}, fmt.Errorf("%w: %s without data", ErrBadMessage, m.Type)
		}
		rec, err := db.ParseRecord(raw)
		if err != nil {
			return Message{}, fmt.Errorf("%w: data: %w", ErrBadMessage, err)
		}
		if len(rec.Key) > maxKeyLen {
			return Message{}, fmt.Errorf("%w: key longer than %d bytes", ErrBadMessage, maxKeyLen)
		}
		m.Data = &rec
		m.Catchup = p.boolean("catchup")
	case TypeGet, TypeCRDTGet, TypeSubscribe, TypeQuery:
		m.Key = p.str("key", true, maxKeyLen)
	case TypeQueryAck:
		m.Keys = p.strs("keys", true, 1<<20, maxKeyLen)
	case TypeFunction:
		m.Function = p.str("function", true, 256)
		m.Args = p.raw("args")
	case TypeFunctionReturn:
		m.Code = p.str("code", true, 64)
		m.Return = p.raw("return")
	case TypeError:
		m.Code = p.str("code", false, 64)
		m.Error = p.str("error", false, 1024)
		m.Ref = p.str("ref", false, maxIDLen)
	case TypeSync:
		m.Sync = p.sync()
	default:
		return Message{}, fmt.Errorf("%w: %q", ErrUnknownType, truncate(m.Type, 32))
	}
	if p.err != nil {
		return Message{}, p.err
	}
	return m, nil
}

// checkDepth refuses JSON nested deeper than max before anything decodes it, so a deep input
// costs one linear scan and no recursion.
func checkDepth(b []byte, max int) error {
	depth := 0
	inStr, esc := false, false
	for _, c := range b {
		switch {
		case inStr:
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				inStr = false
			}
		case c == '"':
			inStr = true
		case c == '{' || c == '[':
			depth++
			if depth > max {
				return fmt.Errorf("%w: more than %d levels", ErrTooDeep, max)
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return nil
}

// fieldParser reads typed fields from a decoded object, keeping the first error.
type fieldParser struct {
	f   map[string]json.RawMessage
	err error
}

func (p *fieldParser) fail(format string, args ...any) {
	if p.err == nil {
		p.err = fmt.Errorf("%w: "+format, append([]any{ErrBadMessage}, args...)...)
	}
}

func (p *fieldParser) str(name string, required bool, maxLen int) string {
	raw, ok := p.f[name]
	if !ok || string(raw) == "null" && !required {
		if required {
			p.fail("missing %q", name)
		}
		return ""
	}
	if len(raw) == 0 || raw[0] != '"' {
		p.fail("%q is not a string", name)
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.fail("%q: %v", name, err)
		return ""
	}
	if len(s) > maxLen {
		p.fail("%q longer than %d bytes", name, maxLen)
		return ""
	}
	return s
}

func (p *fieldParser) strs(name string, required bool, maxN, maxLen int) []string {
	raw, ok := p.f[name]
	if !ok {
		if required {
			p.fail("missing %q", name)
		}
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.fail("%q is not an array", name)
		return nil
	}
	if len(items) > maxN {
		p.fail("%q has more than %d entries", name, maxN)
		return nil
	}
	out := make([]string, 0, len(items))
	for _, it := range items {
		if len(it) == 0 || it[0] != '"' {
			p.fail("%q holds a non-string", name)
			return nil
		}
		var s string
		if err := json.Unmarshal(it, &s); err != nil || len(s) > maxLen {
			p.fail("%q holds a bad string", name)
			return nil
		}
		out = append(out, s)
	}
	return out
}

func (p *fieldParser) boolean(name string) bool {
	raw, ok := p.f[name]
	if !ok {
		return false
	}
	switch string(raw) {
	case "true":
		return true
	case "false", "null":
		return false
	}
	p.fail("%q is not a boolean", name)
	return false
}

func (p *fieldParser) integer(name string, required bool) int64 {
	raw, ok := p.f[name]
	if !ok {
		if required {
			p.fail("missing %q", name)
		}
		return 0
	}
	n, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil {
		p.fail("%q is not an integer", name)
	}
	return n
}

func (p *fieldParser) raw(name string) json.RawMessage {
	raw, ok := p.f[name]
	if !ok {
		return nil
	}
	return raw
}

func (p *fieldParser) peer(name string, required bool) *PeerDesc {
	raw, ok := p.f[name]
	if !ok {
		if required {
			p.fail("missing %q", name)
		}
		return nil
	}
	d, err := parsePeerDesc(raw)
	if err != nil {
		p.fail("%q: %v", name, err)
		return nil
	}
	return &d
}

// peers reads pong.servers. ToolDb always sends an array; we accept a missing one as empty.
// Entries that are not peer descriptors are skipped, not fatal: they are informational.
func (p *fieldParser) peers(name string) []PeerDesc {
	raw, ok := p.f[name]
	if !ok || string(raw) == "null" {
		return nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		p.fail("%q is not an array", name)
		return nil
	}
	var out []PeerDesc
	for _, it := range items[:min(len(items), maxServers)] {
		if d, err := parsePeerDesc(it); err == nil {
			out = append(out, d)
		}
	}
	return out
}

func parsePeerDesc(raw json.RawMessage) (PeerDesc, error) {
	var f map[string]json.RawMessage
	if err := json.Unmarshal(raw, &f); err != nil || f == nil {
		return PeerDesc{}, fmt.Errorf("%w: peer is not an object", ErrBadMessage)
	}
	p := fieldParser{f: f}
	d := PeerDesc{
		Topic:     p.str("topic", true, 1024),
		Timestamp: p.integer("timestamp", true),
		Host:      p.str("host", false, 1024),
		Port:      p.integer("port", false),
		Address:   p.str("address", true, 256),
		Sig:       p.str("sig", true, 256),
	}
	return d, p.err
}

func (p *fieldParser) sync() *SyncBody {
	s := &SyncBody{Op: p.str("op", true, 16), Path: p.str("path", false, 64)}
	if p.err != nil {
		return nil
	}
	for _, c := range s.Path {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			p.fail("sync path is not lowercase hex")
			return nil
		}
	}
	switch s.Op {
	case syncOpTree:
		var sums [][2]json.RawMessage
		if err := json.Unmarshal(p.raw("sums"), &sums); err != nil || len(sums) != syncFanout {
			p.fail("sync tree needs %d sums", syncFanout)
			return nil
		}
		for _, e := range sums {
			n, err1 := strconv.ParseInt(string(e[0]), 10, 64)
			var h string
			err2 := json.Unmarshal(e[1], &h)
			if err1 != nil || err2 != nil || n < 0 || len(h) > 64 {
				p.fail("bad sync sum")
				return nil
			}
			s.Sums = append(s.Sums, SyncSum{Count: n, Hash: h})
		}
	case syncOpPrune:
	case syncOpLeaf, syncOpHave, syncOpIHave, syncOpGraft:
		var items [][2]string
		if raw := p.raw("items"); raw != nil {
			if err := json.Unmarshal(raw, &items); err != nil || len(items) > maxSyncList {
				p.fail("bad sync items")
				return nil
			}
		}
		for _, it := range items {
			s.Items = append(s.Items, SyncItem{Key: it[0], Hash: it[1]})
		}
	case syncOpWant:
		s.Keys = p.strs("keys", true, maxSyncList, maxKeyLen)
	default:
		p.fail("unknown sync op %q", truncate(s.Op, 16))
		return nil
	}
	return s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// AppendMessage appends m as one JSON object. Strings are escaped as JavaScript's
// JSON.stringify escapes them (no HTML escaping), records are written by db.AppendRecord so v
// keeps its bytes, and arrays ToolDb iterates (to, servers, keys) are never null.
func AppendMessage(b []byte, m *Message) []byte {
	b = append(b, `{"type":`...)
	b = appendString(b, m.Type)
	b = append(b, `,"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"to":`...)
	b = appendStrings(b, m.To)
	switch m.Type {
	case TypePing, TypePong:
		b = appendHello(b, m)
	case TypePut, TypeCRDTPut:
		b = appendPut(b, m)
	case TypeGet, TypeCRDTGet, TypeSubscribe, TypeQuery:
		b = append(b, `,"key":`...)
		b = appendString(b, m.Key)
	case TypeQueryAck:
		b = append(b, `,"keys":`...)
		b = appendStrings(b, m.Keys)
	case TypeFunction:
		b = append(b, `,"function":`...)
		b = appendString(b, m.Function)
		b = append(b, `,"args":`...)
		b = appendRaw(b, m.Args)
	case TypeFunctionReturn:
		b = append(b, `,"code":`...)
		b = appendString(b, m.Code)
		b = append(b, `,"return":`...)
		b = appendRaw(b, m.Return)
	case TypeError:
		b = append(b, `,"code":`...)
		b = appendString(b, m.Code)
		b = append(b, `,"error":`...)
		b = appendString(b, m.Error)
		if m.Ref != "" {
			b = append(b, `,"ref":`...)
			b = appendString(b, m.Ref)
		}
	case TypeSync:
		if m.Sync != nil {
			b = appendSyncBody(b, m.Sync)
		}
	}
	return append(b, '}')
}

// appendHello appends the fields of a ping or pong after "to".
func appendHello(b []byte, m *Message) []byte {
	b = append(b, `,"isServer":`...)
	b = strconv.AppendBool(b, m.IsServer)
	b = append(b, `,"clientId":`...)
	b = appendString(b, m.ClientID)
	if m.Peer != nil {
		b = append(b, `,"peer":`...)
		b = appendPeerDesc(b, m.Peer)
	}
	if m.Type == TypePong {
		b = append(b, `,"servers":[`...)
		for i := range m.Servers {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPeerDesc(b, &m.Servers[i])
		}
		b = append(b, ']')
	}
	if m.Swarmdb != 0 {
		b = append(b, `,"swarmdb":`...)
		b = strconv.AppendInt(b, int64(m.Swarmdb), 10)
	}
	return b
}

// appendPut appends the fields of a put or crdtPut after "to".
func appendPut(b []byte, m *Message) []byte {
	b = append(b, `,"data":`...)
	if m.Data != nil {
		b = db.AppendRecord(b, m.Data)
	} else {
		b = append(b, "null"...)
	}
	if m.Catchup {
		b = append(b, `,"catchup":true`...)
	}
	return b
}

func appendSyncBody(b []byte, s *SyncBody) []byte {
	b = append(b, `,"op":`...)
	b = appendString(b, s.Op)
	b = append(b, `,"path":`...)
	b = appendString(b, s.Path)
	switch s.Op {
	case syncOpTree:
		b = append(b, `,"sums":[`...)
		for i, e := range s.Sums {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = strconv.AppendInt(b, e.Count, 10)
			b = append(b, ',')
			b = appendString(b, e.Hash)
			b = append(b, ']')
		}
		b = append(b, ']')
	case syncOpLeaf, syncOpHave, syncOpIHave, syncOpGraft:
		b = append(b, `,"items":[`...)
		for i, it := range s.Items {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			b = appendString(b, it.Key)
			b = append(b, ',')
			b = appendString(b, it.Hash)
			b = append(b, ']')
		}
		b = append(b, ']')
	case syncOpWant:
		b = append(b, `,"keys":`...)
		b = appendStrings(b, s.Keys)
	}
	return b
}

func appendPeerDesc(b []byte, d *PeerDesc) []byte {
	b = append(b, `{"topic":`...)
	b = appendString(b, d.Topic)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendInt(b, d.Timestamp, 10)
	b = append(b, `,"host":`...)
	b = appendString(b, d.Host)
	b = append(b, `,"port":`...)
	b = strconv.AppendInt(b, d.Port, 10)
	b = append(b, `,"address":`...)
	b = appendString(b, d.Address)
	b = append(b, `,"sig":`...)
	b = appendString(b, d.Sig)
	return append(b, '}')
}

func appendRaw(b []byte, raw json.RawMessage) []byte {
	if len(raw) == 0 {
		return append(b, "null"...)
	}
	return append(b, raw...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, s)
	}
	return append(b, ']')
}

// appendString writes s as JSON.stringify does (see db.AppendJSString), so
// record fields keep the exact bytes ToolDb hashes and signs.
func appendString(b []byte, s string) []byte { return db.AppendJSString(b, s) }
