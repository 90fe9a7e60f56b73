// Package sqlite implements store.Store in one embedded SQLite file, with a
// pure-Go driver (no cgo).
package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cocmd/cocmd/stage"
	"github.com/cocmd/cocmd/store"

	_ "modernc.org/sqlite" // the database/sql driver "sqlite"
)

// DB is a store.Store in an SQLite file.
//
// Durability: the database is in WAL mode with synchronous=FULL, so a
// write that returned has been fsynced and survives a power loss, not only
// a crash of the process. Stage statuses, the writes that come by the
// thousand, are group-committed: one goroutine takes every SaveStatuses
// waiting and writes them in one transaction (one fsync), each in a
// savepoint of its own so that one failing write fails alone.
type DB struct {
	db *sql.DB

	writes chan *statusWrite
	stop   chan struct{}
	done   chan struct{}
}

var _ store.Store = (*DB)(nil)

// migrations are applied in order; PRAGMA user_version counts those applied.
var migrations = []string{`
CREATE TABLE settings (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
);
CREATE TABLE presets (
	name        TEXT PRIMARY KEY,
	permissions TEXT NOT NULL
);
CREATE TABLE meetings (
	n                 INTEGER PRIMARY KEY,
	id                TEXT NOT NULL UNIQUE,
	title             TEXT NOT NULL,
	type              TEXT NOT NULL,
	max_on_stage      INTEGER NOT NULL,
	stage_request_ttl INTEGER NOT NULL,
	created_at        INTEGER NOT NULL,
	ended_at          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE participants (
	n            INTEGER PRIMARY KEY,
	id           TEXT NOT NULL UNIQUE,
	meeting_id   TEXT NOT NULL REFERENCES meetings(id),
	user_id      TEXT NOT NULL,
	name         TEXT NOT NULL,
	preset       TEXT NOT NULL REFERENCES presets(name),
	created_at   INTEGER NOT NULL,
	stage_status TEXT NOT NULL,
	requested_at INTEGER NOT NULL DEFAULT 0,
	request_seq  INTEGER NOT NULL DEFAULT 0,
	UNIQUE (meeting_id, user_id)
);
CREATE INDEX participants_meeting ON participants(meeting_id, n);
CREATE INDEX participants_preset ON participants(preset);
`, `
CREATE TABLE events (
	n              INTEGER PRIMARY KEY,
	meeting_id     TEXT NOT NULL,
	seq            INTEGER NOT NULL,
	type           TEXT NOT NULL,
	at             INTEGER NOT NULL,
	actor_kind     TEXT NOT NULL,
	actor_id       TEXT NOT NULL,
	participant_id TEXT NOT NULL,
	user_id        TEXT NOT NULL,
	data           BLOB NOT NULL,
	UNIQUE (meeting_id, seq)
);
CREATE INDEX events_participant ON events(meeting_id, participant_id, seq);
`, `
CREATE TABLE webhook_endpoints (
	id            TEXT PRIMARY KEY,
	url           TEXT NOT NULL,
	event_types   TEXT NOT NULL,
	secrets       TEXT NOT NULL,
	secrets_until INTEGER NOT NULL,
	created_at    INTEGER NOT NULL,
	start_n       INTEGER NOT NULL,
	status        TEXT NOT NULL,
	status_at     INTEGER NOT NULL,
	note          TEXT NOT NULL
);
CREATE TABLE webhook_cursors (
	endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
	meeting_id  TEXT NOT NULL,
	seq         INTEGER NOT NULL,
	PRIMARY KEY (endpoint_id, meeting_id)
);
CREATE TABLE webhook_attempts (
	n           INTEGER PRIMARY KEY,
	endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
	event_id    TEXT NOT NULL,
	meeting_id  TEXT NOT NULL,
	seq         INTEGER NOT NULL,
	at          INTEGER NOT NULL,
	status      INTEGER NOT NULL,
	latency_us  INTEGER NOT NULL,
	error       TEXT NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts(endpoint_id, n);
`}

// Open opens (creating if needed) the database file at path and brings its
// schema up to date.
func Open(ctx context.Context, path string) (*DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "foreign_keys(1)", "busy_timeout(5000)", "secure_delete(1)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	// SQLite has one writer; one connection keeps writes from ever meeting
	// SQLITE_BUSY and is plenty for what cocmd writes.
	db.SetMaxOpenConns(1)
	d := &DB{db: db, writes: make(chan *statusWrite, maxGroup), stop: make(chan struct{}), done: make(chan struct{})}
	if err := d.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", path, err)
	}
	go d.committer()
	return d, nil
}

func (d *DB) migrate(ctx context.Context) error {
	var v int
	if err := d.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	for i := v; i < len(migrations); i++ {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			tx.Rollback()
			return err
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database, after the writes already queued.
func (d *DB) Close() error {
	select {
	case <-d.stop:
	default:
		close(d.stop)
	}
	<-d.done
	return d.db.Close()
}

func notFound(what, id string) error {
	return stage.Errorf(stage.ErrNotFound, what+" "+strconv.Quote(id)+" not found")
}

func isUnique(err error) bool {
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(v int64) time.Time {
	if v == 0 {
		return time.Time{}
	}
	return time.UnixMilli(v).UTC()
}

// Setting implements store.Store.
func (d *DB) Setting(ctx context.Context, key string) ([]byte, error) {
	var v []byte
	err := d.db.QueryRowContext(ctx, "SELECT value FROM settings WHERE key = ?", key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFound("setting", key)
	}
	return v, err
}

// SetSettingOnce implements store.Store.
func (d *DB) SetSettingOnce(ctx context.Context, key string, value []byte) ([]byte, error) {
	if _, err := d.db.ExecContext(ctx, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING", key, value); err != nil {
		return nil, err
	}
	return d.Setting(ctx, key)
}

// SetSetting implements store.Store.
func (d *DB) SetSetting(ctx context.Context, key string, value []byte) error {
	_, err := d.db.ExecContext(ctx, "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)
	return err
}

// DeleteSetting implements store.Store.
func (d *DB) DeleteSetting(ctx context.Context, key string) error {
	_, err := d.db.ExecContext(ctx, "DELETE FROM settings WHERE key = ?", key)
	return err
}

// CreatePreset implements store.Store.
func (d *DB) CreatePreset(ctx context.Context, p stage.Preset) error {
	b, err := json.Marshal(p.Permissions)
	if err != nil {
		return err
	}
	_, err = d.db.ExecContext(ctx, "INSERT INTO presets (name, permissions) VALUES (?, ?)", p.Name, b)
	if isUnique(err) {
		return &store.ConflictError{Msg: "preset " + strconv.Quote(p.Name) + " already exists"}
	}
	return err
}

func scanPreset(name string, perms []byte) (stage.Preset, error) {
	p := stage.Preset{Name: name}
	if err := json.Unmarshal(perms, &p.Permissions); err != nil {
		return p, fmt.Errorf("sqlite: preset %s: %w", name, err)
	}
	return p, nil
}

// Preset implements store.Store.
func (d *DB) Preset(ctx context.Context, name string) (stage.Preset, error) {
	var perms []byte
	err := d.db.QueryRowContext(ctx, "SELECT permissions FROM presets WHERE name = ?", name).Scan(&perms)
	if errors.Is(err, sql.ErrNoRows) {
		return stage.Preset{}, notFound("preset", name)
	}
	if err != nil {
		return stage.Preset{}, err
	}
	return scanPreset(name, perms)
}

// Presets implements store.Store.
func (d *DB) Presets(ctx context.Context) ([]stage.Preset, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT name, permissions FROM presets ORDER BY name")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []stage.Preset
	for rows.Next() {
		var name string
		var perms []byte
		if err := rows.Scan(&name, &perms); err != nil {
			return nil, err
		}
		p, err := scanPreset(name, perms)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// UpdatePreset implements store.Store.
func (d *DB) UpdatePreset(ctx context.Context, p stage.Preset) error {
	b, err := json.Marshal(p.Permissions)
	if err != nil {
		return err
	}
	res, err := d.db.ExecContext(ctx, "UPDATE presets SET permissions = ? WHERE name = ?", b, p.Name)
	return affected(res, err, "preset", p.Name)
}

// DeletePreset implements store.Store.
func (d *DB) DeletePreset(ctx context.Context, name string) error {
	var n int
	if err := d.db.QueryRowContext(ctx, "SELECT count(*) FROM participants WHERE preset = ?", name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return &store.ConflictError{Msg: fmt.Sprintf("preset %q is used by %d participants", name, n)}
	}
	res, err := d.db.ExecContext(ctx, "DELETE FROM presets WHERE name = ?", name)
	return affected(res, err, "preset", name)
}

func affected(res sql.Result, err error, what, id string) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound(what, id)
	}
	return nil
}

// CreateMeeting implements store.Store.
func (d *DB) CreateMeeting(ctx context.Context, m store.Meeting, events []store.Event) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO meetings (id, title, type, max_on_stage, stage_request_ttl, created_at)
		VALUES (?, ?, ?, ?, ?, ?)`, m.ID, m.Title, m.Type.String(), m.MaxOnStage, m.StageRequestTTL.Milliseconds(), ms(m.CreatedAt)); err != nil {
			return err
		}
		return insertEvents(ctx, tx, events)
	})
}

// inTx runs fn in a transaction, committed if fn returns nil.
func (d *DB) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

const insertEvent = `INSERT INTO events (meeting_id, seq, type, at, actor_kind, actor_id, participant_id, user_id, data)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`

// insertEvents appends events to their meetings' logs.
func insertEvents(ctx context.Context, tx execer, events []store.Event) error {
	if len(events) == 0 {
		return nil
	}
	return insertEventsWith(ctx, func(args ...any) error {
		_, err := tx.ExecContext(ctx, insertEvent, args...)
		return err
	}, events)
}

// insertEventsWith appends events with exec, which runs insertEvent.
func insertEventsWith(_ context.Context, exec func(args ...any) error, events []store.Event) error {
	for _, e := range events {
		data := e.Data
		if data == nil {
			data = []byte("{}")
		}
		if err := exec(e.MeetingID, int64(e.Seq), e.Type, ms(e.At), string(e.Actor.Kind), e.Actor.ID,
			e.ParticipantID, e.UserID, []byte(data)); err != nil {
			return err
		}
	}
	return nil
}

const eventCols = "seq, meeting_id, type, at, actor_kind, actor_id, participant_id, user_id, data, n"

func scanEvent(r scanner) (store.Event, int64, error) {
	var e store.Event
	var seq, at int64
	var kind string
	if err := r.Scan(&seq, &e.MeetingID, &e.Type, &at, &kind, &e.Actor.ID, &e.ParticipantID, &e.UserID, &e.Data, &e.N); err != nil {
		return e, 0, err
	}
	e.Seq, e.At, e.Actor.Kind = uint64(seq), fromMS(at), store.ActorKind(kind)
	return e, seq, nil
}

// LastEventSeq implements store.Store.
func (d *DB) LastEventSeq(ctx context.Context, meetingID string) (uint64, error) {
	var seq int64
	err := d.db.QueryRowContext(ctx, "SELECT COALESCE(MAX(seq), 0) FROM events WHERE meeting_id = ?", meetingID).Scan(&seq)
	return uint64(seq), err
}

// Events implements store.Store.
func (d *DB) Events(ctx context.Context, meetingID string, f store.EventFilter, page store.Page) ([]store.Event, string, error) {
	q := "SELECT " + eventCols + " FROM events WHERE meeting_id = ?"
	args := []any{meetingID}
	if f.ParticipantID != "" {
		q += " AND participant_id = ?"
		args = append(args, f.ParticipantID)
	}
	if len(f.Types) > 0 {
		q += " AND type IN (?" + strings.Repeat(", ?", len(f.Types)-1) + ")"
		for _, t := range f.Types {
			args = append(args, t)
		}
	}
	if !f.From.IsZero() {
		q += " AND at >= ?"
		args = append(args, ms(f.From))
	}
	if !f.To.IsZero() {
		q += " AND at < ?"
		args = append(args, ms(f.To))
	}
	return paged(ctx, d, page, scanEvent, q+" AND seq > ? ORDER BY seq LIMIT ?", args...)
}

const meetingCols = "n, id, title, type, max_on_stage, stage_request_ttl, created_at, ended_at"

type scanner interface{ Scan(...any) error }

func scanMeeting(r scanner) (store.Meeting, int64, error) {
	var m store.Meeting
	var n, ttl, created, ended int64
	var typ string
	if err := r.Scan(&n, &m.ID, &m.Title, &typ, &m.MaxOnStage, &ttl, &created, &ended); err != nil {
		return m, 0, err
	}
	t, err := stage.ParseMeetingType(typ)
	if err != nil {
		return m, 0, err
	}
	m.Type, m.StageRequestTTL = t, time.Duration(ttl)*time.Millisecond
	m.CreatedAt, m.EndedAt = fromMS(created), fromMS(ended)
	return m, n, nil
}

// Meeting implements store.Store.
func (d *DB) Meeting(ctx context.Context, id string) (store.Meeting, error) {
	m, _, err := scanMeeting(d.db.QueryRowContext(ctx, "SELECT "+meetingCols+" FROM meetings WHERE id = ?", id))
	if errors.Is(err, sql.ErrNoRows) {
		return m, notFound("meeting", id)
	}
	return m, err
}

// Meetings implements store.Store.
func (d *DB) Meetings(ctx context.Context, page store.Page) ([]store.Meeting, string, error) {
	return paged(ctx, d, page, scanMeeting, "SELECT "+meetingCols+" FROM meetings WHERE n > ? ORDER BY n LIMIT ?")
}

// paged runs a query whose last two parameters are the cursor (a row number)
// and the limit, and returns one page and the cursor of the next.
func paged[T any](ctx context.Context, d *DB, page store.Page, scan func(scanner) (T, int64, error), query string, args ...any) ([]T, string, error) {
	after, err := store.ParseCursor(page.After)
	if err != nil {
		return nil, "", err
	}
	rows, err := d.db.QueryContext(ctx, query, append(args, after, page.Limit+1)...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []T
	var last int64
	for rows.Next() {
		if len(out) == page.Limit {
			return out, strconv.FormatInt(last, 10), nil
		}
		v, n, err := scan(rows)
		if err != nil {
			return nil, "", err
		}
		out, last = append(out, v), n
	}
	return out, "", rows.Err()
}

// UpdateMeeting implements store.Store.
func (d *DB) UpdateMeeting(ctx context.Context, m store.Meeting, events []store.Event) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE meetings SET title = ?, max_on_stage = ?, stage_request_ttl = ?, ended_at = ? WHERE id = ?`,
			m.Title, m.MaxOnStage, m.StageRequestTTL.Milliseconds(), ms(m.EndedAt), m.ID)
		if err := affected(res, err, "meeting", m.ID); err != nil {
			return err
		}
		return insertEvents(ctx, tx, events)
	})
}

// AddParticipant implements store.Store.
func (d *DB) AddParticipant(ctx context.Context, p store.Participant) error {
	_, err := d.db.ExecContext(ctx, `INSERT INTO participants (id, meeting_id, user_id, name, preset, created_at, stage_status)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, p.ID, p.MeetingID, p.UserID, p.Name, p.Preset, ms(p.CreatedAt), p.Status.String())
	if isUnique(err) {
		return &store.ConflictError{Msg: "user " + strconv.Quote(p.UserID) + " is already a participant of the meeting"}
	}
	if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
		return stage.Errorf(stage.ErrNotFound, "meeting or preset not found")
	}
	return err
}

const participantCols = "n, id, meeting_id, user_id, name, preset, created_at, stage_status, requested_at, request_seq"

func scanParticipant(r scanner) (store.Participant, int64, error) {
	var p store.Participant
	var n, created, requested int64
	var status string
	if err := r.Scan(&n, &p.ID, &p.MeetingID, &p.UserID, &p.Name, &p.Preset, &created, &status, &requested, &p.RequestSeq); err != nil {
		return p, 0, err
	}
	st, err := stage.ParseStatus(status)
	if err != nil {
		return p, 0, err
	}
	p.Status, p.CreatedAt, p.RequestedAt = st, fromMS(created), fromMS(requested)
	return p, n, nil
}

// Participant implements store.Store.
func (d *DB) Participant(ctx context.Context, meetingID, id string) (store.Participant, error) {
	p, _, err := scanParticipant(d.db.QueryRowContext(ctx,
		"SELECT "+participantCols+" FROM participants WHERE id = ? AND meeting_id = ?", id, meetingID))
	if errors.Is(err, sql.ErrNoRows) {
		return p, notFound("participant", id)
	}
	return p, err
}

// Participants implements store.Store.
func (d *DB) Participants(ctx context.Context, meetingID string, page store.Page) ([]store.Participant, string, error) {
	return paged(ctx, d, page, scanParticipant,
		"SELECT "+participantCols+" FROM participants WHERE meeting_id = ? AND n > ? ORDER BY n LIMIT ?", meetingID)
}

// AllParticipants implements store.Store.
func (d *DB) AllParticipants(ctx context.Context, meetingID string) ([]store.Participant, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT "+participantCols+" FROM participants WHERE meeting_id = ? ORDER BY n", meetingID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Participant
	for rows.Next() {
		p, _, err := scanParticipant(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// SetParticipantPreset implements store.Store.
func (d *DB) SetParticipantPreset(ctx context.Context, meetingID, id, preset string, statuses []store.Status, events []store.Event) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "UPDATE participants SET preset = ? WHERE id = ? AND meeting_id = ?", preset, id, meetingID)
		if err != nil && strings.Contains(err.Error(), "FOREIGN KEY") {
			return notFound("preset", preset)
		}
		if err := affected(res, err, "participant", id); err != nil {
			return err
		}
		for _, st := range statuses {
			if _, err := tx.ExecContext(ctx, "UPDATE participants SET stage_status = ?, requested_at = ?, request_seq = ? WHERE id = ? AND meeting_id = ?",
				st.Status.String(), ms(st.RequestedAt), st.RequestSeq, st.ParticipantID, meetingID); err != nil {
				return err
			}
		}
		return insertEvents(ctx, tx, events)
	})
}

// RemoveParticipant implements store.Store.
func (d *DB) RemoveParticipant(ctx context.Context, meetingID, id string, events []store.Event) error {
	return d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM participants WHERE id = ? AND meeting_id = ?", id, meetingID)
		if err := affected(res, err, "participant", id); err != nil {
			return err
		}
		return insertEvents(ctx, tx, events)
	})
}

// maxGroup bounds the writes committed in one transaction.
const maxGroup = 512

// commitTimeout bounds one group's transaction, waits for the lock
// included (busy_timeout).
const commitTimeout = 30 * time.Second

// errClosed answers writes to a closed database.
var errClosed = errors.New("sqlite: the database is closed")

// statusWrite is one SaveStatuses waiting for its group.
type statusWrite struct {
	meetingID string
	statuses  []store.Status
	events    []store.Event
	done      chan error
	then      func(error) // AppendEvents' callback, if any
}

// SaveStatuses implements store.Store. It returns once the statuses are
// committed, or failed to be: once queued, a write is never abandoned
// half-way, whatever ctx does, so the caller always knows its outcome.
func (d *DB) SaveStatuses(ctx context.Context, meetingID string, s []store.Status, events []store.Event) error {
	if len(s) == 0 && len(events) == 0 {
		return nil
	}
	w, err := d.queue(ctx, meetingID, s, events, nil)
	if err != nil {
		return err
	}
	return d.wait(w)
}

// AppendEvents implements store.Store: the entries are queued for the
// next group commit now, in the order of the calls; done, if not nil, is
// called with the commit's outcome, on the committer's goroutine (it must
// not block).
func (d *DB) AppendEvents(ctx context.Context, meetingID string, events []store.Event, done func(error)) {
	if _, err := d.queue(ctx, meetingID, nil, events, done); err != nil && done != nil {
		done(err)
	}
}

// queue hands a write to the committer.
func (d *DB) queue(ctx context.Context, meetingID string, s []store.Status, events []store.Event, then func(error)) (*statusWrite, error) {
	w := &statusWrite{meetingID: meetingID, statuses: s, events: events, done: make(chan error, 1), then: then}
	select {
	case <-d.stop:
		return nil, errClosed
	default:
	}
	select {
	case d.writes <- w:
		return w, nil
	case <-d.stop:
		return nil, errClosed
	case <-ctx.Done():
		return nil, ctx.Err() // not queued: nothing was written
	}
}

// wait returns the outcome of a queued write.
func (d *DB) wait(w *statusWrite) error {
	select {
	case err := <-w.done:
		return err
	case <-d.done:
		// The committer has ended: it either wrote w before, or never
		// will.
		select {
		case err := <-w.done:
			return err
		default:
			return errClosed
		}
	}
}

// committer writes the queued statuses, in groups, until Close.
func (d *DB) committer() {
	defer close(d.done)
	group := make([]*statusWrite, 0, maxGroup)
	for {
		select {
		case w := <-d.writes:
			group = append(group[:0], w)
		case <-d.stop:
			for {
				select {
				case w := <-d.writes:
					d.commit([]*statusWrite{w})
				default:
					return
				}
			}
		}
	more:
		for len(group) < maxGroup {
			select {
			case w := <-d.writes:
				group = append(group, w)
			default:
				break more
			}
		}
		d.commit(group)
		clear(group)
	}
}

// commit writes a group in one transaction and tells each write its
// outcome.
func (d *DB) commit(group []*statusWrite) {
	errs := make([]error, len(group))
	err := d.commitGroup(group, errs)
	for i, w := range group {
		if errs[i] == nil {
			errs[i] = err
		}
		w.done <- errs[i]
		if w.then != nil {
			w.then(errs[i])
		}
	}
}

func (d *DB) commitGroup(group []*statusWrite, errs []error) error {
	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, "UPDATE participants SET stage_status = ?, requested_at = ?, request_seq = ? WHERE id = ? AND meeting_id = ?")
	if err != nil {
		return err
	}
	defer stmt.Close()
	evStmt, err := tx.PrepareContext(ctx, insertEvent)
	if err != nil {
		return err
	}
	defer evStmt.Close()
	execEvent := func(args ...any) error {
		_, err := evStmt.ExecContext(ctx, args...)
		return err
	}
	for i, w := range group {
		if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			return err
		}
		for _, st := range w.statuses {
			if _, err := stmt.ExecContext(ctx, st.Status.String(), ms(st.RequestedAt), st.RequestSeq, st.ParticipantID, w.meetingID); err != nil {
				errs[i] = err
				break
			}
		}
		if errs[i] == nil {
			errs[i] = insertEventsWith(ctx, execEvent, w.events)
		}
		if errs[i] != nil {
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Backup writes a consistent copy of the database at path to out (a new
// file, 0600), while the database may be in use: it reads one snapshot
// (VACUUM INTO), so writers go on and the copy has every transaction
// committed before it began and none after.
func Backup(ctx context.Context, path, out string) error {
	if _, err := os.Stat(out); err == nil {
		return fmt.Errorf("sqlite: backup: %s exists; give a new file", out)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(5000)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "VACUUM INTO ?", out); err != nil {
		os.Remove(out)
		return fmt.Errorf("sqlite: backup of %s: %w", path, err)
	}
	return os.Chmod(out, 0o600)
}
