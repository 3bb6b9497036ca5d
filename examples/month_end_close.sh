#!/usr/bin/env bash
# Month-end close for cron: ingest what arrived, prove the meter, close the month, print the table.
#
#   usage: month_end_close.sh YYYY-MM [EVENT_FILE ...]
#   env:   USAGEBOX_DB (the database; default ./usagebox.db)
#
# Safe to re-run: re-ingested events are duplicates, and accounts already
# closed are skipped.  Fails loudly (non-zero exit, message on stderr) when
# verify finds drift between the rollups and the raw events, or when a
# command cannot run.  Rejected lines do not stop the close; they are kept
# in rejects-YYYY-MM.ndjson for review.
set -euo pipefail

period="${1:?usage: month_end_close.sh YYYY-MM [EVENT_FILE ...]}"
shift

if [ "$#" -gt 0 ]; then
  status=0
  usagebox ingest "$@" --rejects "rejects-${period}.ndjson" --json > "ingest-${period}.json" || status=$?
  if [ "$status" -ge 2 ]; then
    echo "month_end_close: ingest could not run (exit $status)" >&2
    exit "$status"
  fi
  if [ "$status" -eq 1 ]; then
    echo "month_end_close: some lines were rejected or in conflict; see rejects-${period}.ndjson" >&2
  fi
fi

if ! usagebox verify --period "$period" --json > "verify-${period}.json"; then
  echo "month_end_close: verify found drift for ${period}; not closing (see verify-${period}.json)" >&2
  exit 1
fi

usagebox close-period --all-accounts "$period" --json > "close-${period}.json"
usagebox periods
