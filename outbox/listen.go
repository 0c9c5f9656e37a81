package outbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/stdlib"
)

// isPgx reports whether db's driver is pgx's, the one whose connections
// can wait for notifications.
func isPgx(db *sql.DB) bool {
	_, ok := db.Driver().(*stdlib.Driver)
	return ok
}

// listen wakes the relay each time a transaction that wrote to the
// outbox commits: the trigger that Migrate makes notifies the table's
// channel. It holds one connection of db, and makes a new one when it
// breaks (the server restarted), waking the relay then too, since
// notifications sent meanwhile are lost. It returns when ctx ends.
func (r *Relay) listen(ctx context.Context, wake chan<- struct{}) {
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		err := r.listenOnce(ctx, signal)
		if ctx.Err() != nil {
			return
		}
		backoff = nextBackoff(backoff, r.cfg.MaxBackoff)
		r.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "outbox: relay lost LISTEN; polling until it is back",
			slog.String("table", r.o.cfg.Table), slog.Duration("backoff", backoff), slog.Any("error", err))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// listenOnce listens on one connection until it fails or ctx ends.
func (r *Relay) listenOnce(ctx context.Context, signal func()) error {
	conn, err := r.o.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "LISTEN "+r.o.sql.channel); err != nil {
		return err
	}
	signal() // what was committed while no one listened
	return conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return errors.New("not a pgx connection")
		}
		for {
			if _, err := c.Conn().WaitForNotification(ctx); err != nil {
				// The connection is listening, or broken: never hand it
				// back to the pool.
				return errors.Join(err, driver.ErrBadConn)
			}
			signal()
		}
	})
}
