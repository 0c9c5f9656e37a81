package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// TestFirstMessageLeavesItsCorrelationOut: an event that starts a
// conversation has its own ID as its correlation; that header is left out
// on the wire and its subscriber reads the correlation all the same.
func TestFirstMessageLeavesItsCorrelationOut(t *testing.T) {
	ns := startEventServer(t, false)
	url := ns.ClientURL()
	ev := cqrsnats.EventConfig{}
	r := receiver(t, url, ev)
	p := publisher(t, url, ev)
	got := make(chan cqrs.Identity, 1)
	_, err := cqrsnats.Subscribe(r, "email", func(ctx context.Context, _ ParcelShipped) error {
		id, _ := cqrs.IdentityOf(ctx)
		got <- id
		return nil
	})
	require.NoError(t, err)
	sent, stopSpying := spy(t, url)
	defer stopSpying()

	require.NoError(t, cqrsnats.Publish(context.Background(), p, ParcelShipped{Parcel: 1}))
	var id cqrs.Identity
	select {
	case id = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the event did not arrive")
	}
	require.Len(t, id.ID, 36)
	assert.Equal(t, cqrs.Identity{ID: id.ID, CorrelationID: id.ID}, id)
	m := <-sent
	assert.Equal(t, id.ID, m.Header.Get(cqrsnats.HeaderID))
	assert.Empty(t, m.Header.Values(cqrsnats.HeaderCorrelationID), "the correlation, its own ID, is left out")
	assert.Empty(t, m.Header.Values(cqrsnats.HeaderCausationID))
}
