package gossip

import "testing"

// A node of a build before ring schemes announces none, and one of a newer
// build announces fields this one does not know: each reads what it can.
func TestMetaCarriesTheRingSchemeAndReadsRecordsWithout(t *testing.T) {
	b, err := EncodeMeta(Meta{HTTP: "h:1", Link: "l:2", Inc: "i", Ring: 2})
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := DecodeMeta(b); !ok || m != (Meta{HTTP: "h:1", Link: "l:2", Inc: "i", Ring: 2}) {
		t.Fatalf("round trip of %s gave %+v, %v", b, m, ok)
	}
	older := []byte(`{"v":1,"http":"h:1","link":"l:2","inc":"i"}`)
	if m, ok := DecodeMeta(older); !ok || m.Ring != 0 || m.Link != "l:2" {
		t.Fatalf("a record without a ring scheme gave %+v, %v; want scheme 0 and its addresses", m, ok)
	}
	newer := []byte(`{"v":2,"http":"h:1","link":"l:2","inc":"i","ring":3,"zone":"eu"}`)
	if m, ok := DecodeMeta(newer); !ok || m.Ring != 3 || m.Link != "l:2" {
		t.Fatalf("a newer record gave %+v, %v; want its scheme and addresses", m, ok)
	}
}
