package db

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func randomMap(rng *rand.Rand, authors []string, n int) string {
	var parts []string
	for i := 0; i < n; i++ {
		op := []string{"SET", "SET", "DEL"}[rng.IntN(3)]
		v := ""
		if op == "SET" {
			v = fmt.Sprintf(`,"v":%d`, rng.IntN(5))
		}
		parts = append(parts, fmt.Sprintf(`{"t":%q,"k":"%c","a":%q%s,"i":%d}`, op, 'a'+rng.IntN(3), authors[rng.IntN(len(authors))], v, 1+rng.IntN(3)))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func randomCounter(rng *rand.Rand, author string, n int) string {
	var parts []string
	for i := 0; i < n; i++ {
		parts = append(parts, fmt.Sprintf(`{"t":%q,"v":%d,"a":%q,"i":%d}`, []string{"ADD", "SUB"}[rng.IntN(2)], rng.IntN(10), author, rng.IntN(4)))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func randomList(rng *rand.Rand, authors []string, n int) string {
	var parts []string
	idx := func() string { return fmt.Sprintf("%s-%08d", authors[rng.IntN(len(authors))], rng.IntN(4)) }
	for i := 0; i < n; i++ {
		if rng.IntN(4) == 0 {
			parts = append(parts, fmt.Sprintf(`{"t":"DEL","i":%q,"v":%q}`, idx(), idx()))
			continue
		}
		p := ""
		switch rng.IntN(3) {
		case 0:
			p = fmt.Sprintf(`,"p":%q`, idx())
		case 1:
			p = fmt.Sprintf(`,"n":%q`, idx())
		}
		parts = append(parts, fmt.Sprintf(`{"t":"INS"%s,"v":%d,"i":%q}`, p, rng.IntN(5), idx()))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// TestCRDTMergeLaws checks that Merge is commutative, associative and idempotent, and that the
// value depends only on the merged set, for random MAP, LIST and COUNTER change lists
// (including same-identity changes with different bytes).
func TestCRDTMergeLaws(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	authors := []string{"alice", "bob", "carol"}
	gens := map[string]func() string{
		TypeMap:     func() string { return randomMap(rng, authors, 1+rng.IntN(6)) },
		TypeList:    func() string { return randomList(rng, authors, 1+rng.IntN(6)) },
		TypeCounter: func() string { return randomCounter(rng, authors[rng.IntN(3)], 1+rng.IntN(6)) },
	}
	for typ, gen := range gens {
		for i := 0; i < 300; i++ {
			var s [3]ChangeSet
			for j := range s {
				var err error
				if s[j], err = ParseChanges(typ, []byte(gen())); err != nil {
					t.Fatal(err)
				}
			}
			m := func(a, b ChangeSet) ChangeSet {
				c, err := a.Merge(b)
				if err != nil {
					t.Fatal(err)
				}
				return c
			}
			ab, ba := m(s[0], s[1]), m(s[1], s[0])
			if !ab.Equal(ba) || string(ab.Value()) != string(ba.Value()) || string(ab.AppendJSON(nil)) != string(ba.AppendJSON(nil)) {
				t.Fatalf("%s not commutative:\n%s\n%s", typ, ab.AppendJSON(nil), ba.AppendJSON(nil))
			}
			l, r := m(m(s[0], s[1]), s[2]), m(s[0], m(s[1], s[2]))
			if string(l.AppendJSON(nil)) != string(r.AppendJSON(nil)) || string(l.Value()) != string(r.Value()) {
				t.Fatalf("%s not associative", typ)
			}
			if aa := m(s[0], s[0]); !aa.Equal(s[0]) || string(aa.Value()) != string(s[0].Value()) {
				t.Fatalf("%s not idempotent", typ)
			}
			if !m(ab, s[0]).Equal(ab) || !m(ab, s[1]).Equal(ab) {
				t.Fatalf("%s union does not absorb its parts", typ)
			}
		}
	}
}

func TestCRDTParseErrors(t *testing.T) {
	for _, c := range []struct{ typ, v string }{
		{"SET", `[]`},
		{TypeMap, `{}`},
		{TypeMap, `[1]`},
		{TypeMap, `[{"t":"ADD","k":"x","a":"a","i":1}]`},
		{TypeMap, `[{"t":"SET","k":"x","a":"a","i":"1","v":1}]`},
		{TypeMap, `[{"t":"SET","k":"x","a":"a","i":1}]`},
		{TypeList, `[{"t":"INS","i":"a-00000000"}]`},
		{TypeList, `[{"t":"DEL","i":"a-00000000","v":3}]`},
		{TypeCounter, `[{"t":"ADD","v":"5","a":"a","i":0}]`},
	} {
		if _, err := ParseChanges(c.typ, []byte(c.v)); err == nil {
			t.Errorf("%s %s parsed", c.typ, c.v)
		}
	}
}
