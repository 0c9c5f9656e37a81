package nats

import (
	"bytes"
	"testing"
	"time"

	"github.com/typedcqrs/dispatch/cqrs"
)

// FuzzOpenStream: any bytes open as a stream request or fail, never
// panic, and an opened request has its window and heartbeat in bounds; a
// sealed request opens as it was sealed.
func FuzzOpenStream(f *testing.F) {
	key := streamKey{1, 2, 3}
	f.Add(sealStream(nil, 32, time.Second, &key, time.Second, time.Time{}, "example.com/x.Q", []byte(`{}`)))
	f.Add([]byte{streamMark, 0x80})
	f.Add([]byte{streamMark, 0, 0, envelopeMark})
	f.Add(append(append([]byte{streamMark, 0, 0}, key[:]...), envelopeMark))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := openStreamRequest(data)
		if err != nil {
			return
		}
		if r.window < 1 || r.window > maxWindow || r.heartbeat < minHeartbeat || r.heartbeat > maxHeartbeat {
			t.Fatalf("out of bounds: %+v", r)
		}
	})
}

func TestSealStreamRoundTrip(t *testing.T) {
	key := streamKey{0: 0xfe, 15: 0x01}
	data := sealStream(nil, 64, 250*time.Millisecond, &key, time.Second, time.Time{}, "example.com/x.Q", []byte(`{"A":1}`))
	r, err := openStreamRequest(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.window != 64 || r.heartbeat != 250*time.Millisecond || r.key != key || r.env.timeout != time.Second ||
		string(r.env.id) != "example.com/x.Q" || string(r.env.payload) != `{"A":1}` {
		t.Fatalf("opened %+v", r)
	}
}

// FuzzReadEnd: any bytes read as an end frame or fail, never panic; an
// end frame reads as it was written.
func FuzzReadEnd(f *testing.F) {
	spec := cqrs.Spec{Kind: cqrs.KindQuery, Name: "x.Q"}
	key := streamKey{7}
	f.Add(endFrame(nil, spec, &key, 7, nil))
	f.Add(endFrame(nil, spec, &key, 7, cqrs.ErrHandlerNotFound))
	f.Add([]byte{frameEnd, 0, 0xff})
	f.Add(append(append([]byte{frameEnd}, key[:]...), 0, 0xff))
	f.Fuzz(func(t *testing.T, data []byte) {
		items, code, body, ok := readEnd(data)
		if !ok {
			return
		}
		if len(code) > 64 {
			t.Fatalf("a code of %d bytes", len(code))
		}
		again := endFrame(nil, spec, &key, items, nil)
		if code == "" && !bytes.HasPrefix(data, again[:1]) {
			t.Fatalf("%q read as an end with no error", data)
		}
		_ = decodeError(nil, spec, code, "", body) // never panics
	})
}
