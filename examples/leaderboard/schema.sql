-- The leaderboard's tables. The application only writes `scores`; the trigger writes the new
-- board, as a publish item, to Holdfast's outbox in the same transaction, and Holdfast's
-- PostgreSQL source publishes it (docs/postgres.md). The outbox row's id is the board's version.

CREATE TABLE scores (
  player text PRIMARY KEY,
  score  bigint NOT NULL DEFAULT 0
);

CREATE TABLE holdfast_outbox (
  id   bigserial PRIMARY KEY,
  tx   xid8  NOT NULL DEFAULT pg_current_xact_id(),
  item jsonb NOT NULL
);
CREATE INDEX ON holdfast_outbox ((item->>'channel'), tx, id);
CREATE INDEX ON holdfast_outbox (tx, id);

-- The board as the API shows it: {"version": N, "scores": [{"player", "score"}, ...]}.
CREATE FUNCTION board(version bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT jsonb_build_object('version', version, 'scores', coalesce(
    (SELECT jsonb_agg(jsonb_build_object('player', player, 'score', score)
                      ORDER BY score DESC, player) FROM scores), '[]'::jsonb))
$$;

-- The current board: the version is the last outbox row's id.
CREATE FUNCTION current_board() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT board(coalesce((SELECT max(id) FROM holdfast_outbox), 0))
$$;

-- After every change to a score, one publish item with the whole board in all three
-- formats: a long-poll's response, an SSE event (its id the version), a WebSocket message.
CREATE FUNCTION scores_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  version bigint := nextval(pg_get_serial_sequence('holdfast_outbox', 'id'));
  b text := board(version)::text;
BEGIN
  INSERT INTO holdfast_outbox (id, item) VALUES (version, jsonb_build_object(
    'channel', 'scores',
    'formats', jsonb_build_object(
      'http-response', jsonb_build_object('body', b || E'\n'),
      'http-stream', jsonb_build_object(
        'content', 'id: ' || version || E'\nevent: scores\ndata: ' || b || E'\n\n'),
      'ws-message', jsonb_build_object('content', b))));
  PERFORM pg_notify('holdfast_outbox', '');
  RETURN NULL;
END $$;

CREATE TRIGGER scores_changed AFTER INSERT OR UPDATE OR DELETE ON scores
  FOR EACH ROW EXECUTE FUNCTION scores_changed();
