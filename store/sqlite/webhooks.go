package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"time"

	"github.com/cocmd/cocmd/store"
)

const endpointCols = "id, url, event_types, secrets, secrets_until, created_at, start_n, status, status_at, note"

func scanEndpoint(r scanner) (store.Endpoint, error) {
	var e store.Endpoint
	var types, secrets string
	var until, created, statusAt int64
	if err := r.Scan(&e.ID, &e.URL, &types, &secrets, &until, &created, &e.StartN, &e.Status, &statusAt, &e.Note); err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(types), &e.EventTypes); err != nil {
		return e, err
	}
	if err := json.Unmarshal([]byte(secrets), &e.Secrets); err != nil {
		return e, err
	}
	e.SecretsUntil, e.CreatedAt, e.StatusAt = fromMS(until), fromMS(created), fromMS(statusAt)
	return e, nil
}

func jsonText(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// CreateEndpoint implements store.Webhooks.
func (d *DB) CreateEndpoint(ctx context.Context, e store.Endpoint) (store.Endpoint, error) {
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(n), 0) FROM events").Scan(&e.StartN); err != nil {
			return err
		}
		if e.EventTypes == nil {
			e.EventTypes = []string{}
		}
		_, err := tx.ExecContext(ctx, "INSERT INTO webhook_endpoints ("+endpointCols+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
			e.ID, e.URL, jsonText(e.EventTypes), jsonText(e.Secrets), ms(e.SecretsUntil), ms(e.CreatedAt), e.StartN,
			string(e.Status), ms(e.StatusAt), e.Note)
		return err
	})
	return e, err
}

// Endpoint implements store.Webhooks.
func (d *DB) Endpoint(ctx context.Context, id string) (store.Endpoint, error) {
	e, err := scanEndpoint(d.db.QueryRowContext(ctx, "SELECT "+endpointCols+" FROM webhook_endpoints WHERE id = ?", id))
	if err == sql.ErrNoRows {
		return e, notFound("webhook endpoint", id)
	}
	return e, err
}

// Endpoints implements store.Webhooks.
func (d *DB) Endpoints(ctx context.Context) ([]store.Endpoint, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+endpointCols+" FROM webhook_endpoints ORDER BY created_at, id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Endpoint
	for rows.Next() {
		e, err := scanEndpoint(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// UpdateEndpoint implements store.Webhooks.
func (d *DB) UpdateEndpoint(ctx context.Context, e store.Endpoint) error {
	if e.EventTypes == nil {
		e.EventTypes = []string{}
	}
	res, err := d.db.ExecContext(ctx, `UPDATE webhook_endpoints SET url = ?, event_types = ?, secrets = ?, secrets_until = ?,
		status = ?, status_at = ?, note = ? WHERE id = ?`, e.URL, jsonText(e.EventTypes), jsonText(e.Secrets), ms(e.SecretsUntil),
		string(e.Status), ms(e.StatusAt), e.Note, e.ID)
	return affected(res, err, "webhook endpoint", e.ID)
}

// DeleteEndpoint implements store.Webhooks.
func (d *DB) DeleteEndpoint(ctx context.Context, id string) error {
	res, err := d.db.ExecContext(ctx, "DELETE FROM webhook_endpoints WHERE id = ?", id)
	return affected(res, err, "webhook endpoint", id)
}

// PendingEvents implements store.Webhooks.
func (d *DB) PendingEvents(ctx context.Context, id string, after int64, limit int) ([]store.Event, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT e.seq, e.meeting_id, e.type, e.at, e.actor_kind, e.actor_id, e.participant_id, e.user_id, e.data, e.n
		FROM events e LEFT JOIN webhook_cursors c ON c.endpoint_id = ? AND c.meeting_id = e.meeting_id
		WHERE e.n > ? AND e.seq > COALESCE(c.seq, 0) ORDER BY e.n LIMIT ?`, id, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		e, _, err := scanEvent(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Record implements store.Webhooks. Attempts of an endpoint deleted
// meanwhile go with it.
func (d *DB) Record(ctx context.Context, id string, attempts []store.Attempt, delivered map[string]uint64) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		var exists int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM webhook_endpoints WHERE id = ?", id).Scan(&exists); err != nil || exists == 0 {
			return err
		}
		for _, a := range attempts {
			if err := addAttempt(ctx, tx, a); err != nil {
				return err
			}
		}
		for mid, seq := range delivered {
			if _, err := tx.ExecContext(ctx, `INSERT INTO webhook_cursors (endpoint_id, meeting_id, seq) VALUES (?, ?, ?)
				ON CONFLICT (endpoint_id, meeting_id) DO UPDATE SET seq = MAX(seq, excluded.seq)`, id, mid, int64(seq)); err != nil {
				return err
			}
		}
		return nil
	})
}

// AddAttempt implements store.Webhooks.
func (d *DB) AddAttempt(ctx context.Context, a store.Attempt) error {
	return addAttempt(ctx, d.db, a)
}

func addAttempt(ctx context.Context, x execer, a store.Attempt) error {
	_, err := x.ExecContext(ctx, `INSERT INTO webhook_attempts (endpoint_id, event_id, meeting_id, seq, at, status, latency_us, error)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, a.EndpointID, a.EventID, a.MeetingID, int64(a.Seq), ms(a.At), a.Status, a.Latency.Microseconds(), a.Error)
	return err
}

// Attempts implements store.Webhooks: newest first; the cursor is a row
// number, counting down.
func (d *DB) Attempts(ctx context.Context, id string, page store.Page) ([]store.Attempt, string, error) {
	after, err := store.ParseCursor(page.After)
	if err != nil {
		return nil, "", err
	}
	if after == 0 {
		after = 1<<63 - 1
	}
	rows, err := d.db.QueryContext(ctx, `SELECT n, endpoint_id, event_id, meeting_id, seq, at, status, latency_us, error
		FROM webhook_attempts WHERE endpoint_id = ? AND n < ? ORDER BY n DESC LIMIT ?`, id, after, page.Limit+1)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []store.Attempt
	var last int64
	for rows.Next() {
		if len(out) == page.Limit {
			return out, strconv.FormatInt(last, 10), nil
		}
		var a store.Attempt
		var n, seq, at, lat int64
		if err := rows.Scan(&n, &a.EndpointID, &a.EventID, &a.MeetingID, &seq, &at, &a.Status, &lat, &a.Error); err != nil {
			return nil, "", err
		}
		a.Seq, a.At, a.Latency = uint64(seq), fromMS(at), time.Duration(lat)*time.Microsecond
		out, last = append(out, a), n
	}
	return out, "", rows.Err()
}

// Prune implements store.Webhooks: it deletes the log entries committed
// before logBefore (unless it is zero) and the delivery attempts made
// before attemptsBefore, and returns how many of each went.
func (d *DB) Prune(ctx context.Context, logBefore, attemptsBefore time.Time) (entries, attempts int64, err error) {
	if !logBefore.IsZero() {
		res, err := d.db.ExecContext(ctx, "DELETE FROM events WHERE at < ?", ms(logBefore))
		if err != nil {
			return 0, 0, err
		}
		entries, _ = res.RowsAffected()
	}
	res, err := d.db.ExecContext(ctx, "DELETE FROM webhook_attempts WHERE at < ?", ms(attemptsBefore))
	if err != nil {
		return entries, 0, err
	}
	attempts, _ = res.RowsAffected()
	return entries, attempts, nil
}
