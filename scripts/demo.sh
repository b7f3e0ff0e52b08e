#!/usr/bin/env bash
# `make demo`: the main job on the embedded default (SQLite + local files, no servers).
# simulate a drifting event stream → ingest it → stats → train the text-aware model → recommend
# → more events → incremental update → serve → an A/B test with simulated shoppers.
set -euo pipefail
cd "$(dirname "$0")/.."
STREAMREC=.venv/bin/streamrec
HOME_DIR=${DEMO_HOME:-demo-home}
rm -rf "$HOME_DIR"

echo "== 1. simulate a synthetic stream with planted topics, habits and a taste shift"
$STREAMREC simulate --out "$HOME_DIR/sim" --users 400 --items 600 --events 30000 --seed 7

echo "== 2. ingest events and items into the durable event log (the first 24,000 events for now)"
mkdir -p "$HOME_DIR/later"
tail -n +24001 "$HOME_DIR/sim/events.jsonl" > "$HOME_DIR/later/events.jsonl"
head -n 24000 "$HOME_DIR/sim/events.jsonl" > "$HOME_DIR/sim/events.first.jsonl"
mv "$HOME_DIR/sim/events.first.jsonl" "$HOME_DIR/sim/events.jsonl"
$STREAMREC ingest "$HOME_DIR/sim" --home "$HOME_DIR/recs"
echo "   (ingesting the same folder again stores nothing twice:)"
$STREAMREC ingest "$HOME_DIR/sim" --home "$HOME_DIR/recs" --quiet

echo "== 3. what the log holds"
$STREAMREC stats --home "$HOME_DIR/recs"

echo "== 4. train the sequential model with the text-aware item tower (all-MiniLM-L6-v2)"
$STREAMREC train --home "$HOME_DIR/recs" --epochs 20 --max-len 50 --lr 2e-3

echo "== 5. recommendations for a few users, from the live model and their latest events"
for user in u0 u1 u2; do
  $STREAMREC recommend "$user" --home "$HOME_DIR/recs" -k 5
done
echo "   an unknown user gets what is trending:"
$STREAMREC recommend nobody --home "$HOME_DIR/recs" -k 3

echo "== 6. 6,000 more events arrive; the model learns them incrementally (replay)"
$STREAMREC ingest "$HOME_DIR/later" --home "$HOME_DIR/recs" --quiet
$STREAMREC update --home "$HOME_DIR/recs" --quiet
$STREAMREC models list --home "$HOME_DIR/recs"

PORT=${DEMO_PORT:-8000}
URL="http://127.0.0.1:$PORT"
echo "== 7. serve it over HTTP on $URL (OpenAPI docs at $URL/docs)"
export STREAMREC_API_KEY=${STREAMREC_API_KEY:-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')}
$STREAMREC serve --home "$HOME_DIR/recs" --port "$PORT" > "$HOME_DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "$URL/health" > /dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$HOME_DIR/server.log"; exit 1; }
  sleep 0.5
done
show() { echo "\$ curl $*"; curl -sf "$@" | .venv/bin/python -m json.tool | sed -n '1,30p'; }  # sed reads to the end: no broken pipe
show "$URL/recommend/u1?k=3"
show -X POST "$URL/events" -H "X-API-Key: $STREAMREC_API_KEY" -H 'content-type: application/json' \
  -d '[{"user_id":"u1","item_id":"i5","event_type":"click"}]'
show "$URL/recommend/u1?k=3"
show "$URL/search?q=telescope+nebula&user_id=u1&k=3"

echo "== 8. an A/B test: the first fit (a) against the update (b), judged on simulated users' clicks"
show -X POST "$URL/admin/ab" -H "X-API-Key: $STREAMREC_API_KEY" -H 'content-type: application/json' \
  -d '{"a":"v0001","b":"v0002"}'
.venv/bin/python scripts/shop.py --url "$URL" --truth "$HOME_DIR/sim/truth.json" --visits 300
sleep 0.5  # the server writes what it showed every 0.2 s
$STREAMREC ab status --home "$HOME_DIR/recs"
echo "   the dashboard: $URL/dashboard#key=$STREAMREC_API_KEY"
if [ -t 0 ]; then
  echo "== the server keeps answering on $URL — press Ctrl-C to stop"
  wait $SERVER
fi
