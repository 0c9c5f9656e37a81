package nats_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/typedcqrs/dispatch/cqrs"
	cqrsnats "github.com/typedcqrs/dispatch/transport/nats"
)

// shipParcel is a declared command: its marker must travel as nothing.
type shipParcel struct {
	cqrs.Command[tracking]
	Parcel string `json:"parcel"`
}

type tracking struct {
	Code string `json:"code"`
}

func TestDeclaredCommandOverNATS(t *testing.T) {
	ns := startServer(t, -1)
	ctx := context.Background()

	served := cqrs.NewCommandBus()
	require.NoError(t, cqrs.Handle(served, func(_ context.Context, c shipParcel) (tracking, error) {
		return tracking{Code: "T-" + c.Parcel}, nil
	}))
	srv, err := cqrsnats.Serve(connect(t, ns.ClientURL()), served)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, srv.Stop(context.Background())) })

	commands := cqrs.NewCommandBus()
	require.NoError(t, cqrsnats.Forward[shipParcel, tracking](commands, cqrsnats.NewClient(connect(t, ns.ClientURL()))))
	require.NoError(t, cqrs.Require(commands, shipParcel{}))

	got, err := cqrs.Send(ctx, commands, shipParcel{Parcel: "p-9"})
	require.NoError(t, err)
	assert.Equal(t, tracking{Code: "T-p-9"}, got)
}
