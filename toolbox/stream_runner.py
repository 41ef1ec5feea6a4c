"""Local stand-in for Lambda's event source mapping: the table's stream feeds the messaging-stream handler.

In AWS, Lambda reads the `cruddur-messages` stream and invokes the handler in
`aws/lambdas/messaging_stream/`. Locally, `StreamRunner` does the same against
DynamoDB Local: it follows every shard of the table's latest stream (children
of closed shards included), hands each GetRecords batch to the same handler in
Lambda's event shape, retries the records the handler reports as failed
(bounded, with backoff) and keeps going after handler errors and DynamoDB
Local restarts.

Like Lambda, it resumes where it stopped: each shard's last processed
sequence number is kept in a `Checkpoints` (in memory, or in a file so that a
restarted runner does not replay the whole retained stream; bin/dev keeps it
under .local/). A stream it has no position for is read from TRIM_HORIZON:
the handler is idempotent. At INFO it logs one summary line per
`summary_interval` seconds of activity, not one line per batch.

Run it as `bin/ddb/stream-runner`, as a child process (`start_process`) or
in-process (`start_thread`, for tests and benchmarks).
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backend_flask.config import Config
from backend_flask.lib.aws import make_client
from backend_flask.lib.ddb import MessagesTable
from toolbox import local_services
from toolbox.settings import ROOT, child_env

log = logging.getLogger(__name__)

HANDLER_FILE = ROOT / "aws" / "lambdas" / "messaging_stream" / "handler.py"
HANDLER_MODULE = "messaging_stream_handler"
MAX_BATCH_SIZE = 1000          # GetRecords' own limit
MAX_RETRY_DELAY = 5.0

Handler = Callable[[dict, Any], Any]


def load_handler_module() -> ModuleType:
    """Import the Lambda's handler module from aws/lambdas/ (once per process)."""
    module = sys.modules.get(HANDLER_MODULE)
    if module is None:
        spec = importlib.util.spec_from_file_location(HANDLER_MODULE, HANDLER_FILE)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load the stream handler from {HANDLER_FILE}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[HANDLER_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[HANDLER_MODULE]
            raise
    return module


def lambda_handler(client, table: str) -> Handler:
    """Return the Lambda handler bound to a client and table, as its environment binds them in AWS."""
    module = load_handler_module()
    messages = MessagesTable(client, table)

    def invoke(event: dict, context: Any) -> dict:
        return module.process_batch(event, messages)

    return invoke


@dataclass
class LocalContext:
    """The few Lambda context attributes a handler may read."""

    function_name: str = "messaging-stream-local"
    aws_request_id: str = ""
    deadline: float = 0.0

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the (simulated) Lambda timeout."""
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def to_lambda_record(record: dict, stream_arn: str) -> dict:
    """Turn a GetRecords record into the record Lambda passes to a function (JSON types, eventSourceARN)."""
    shaped = {key: record[key] for key in ("eventID", "eventName", "eventVersion", "eventSource", "awsRegion",
                                            "dynamodb", "userIdentity") if key in record}
    shaped["eventSourceARN"] = stream_arn
    # Lambda's event is JSON: epoch-second timestamps, base64 binary values.
    return json.loads(json.dumps(shaped, default=_json_default))


def _error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


class StreamUnavailable(Exception):
    """The table or its stream is not there (yet)."""


class Checkpoints:
    """Each shard's last processed sequence number, for one stream: in memory, or also in a JSON file.

    A file survives the runner: the next one resumes after those records
    instead of replaying the stream. Positions of another stream (the table
    was created again) are not used.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self._stream_arn: str | None = None
        self._shards: dict[str, str] = {}
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            saved = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("stream runner: ignoring unreadable positions in %s (%s)", path, exc)
            return
        shards = saved.get("shards") if isinstance(saved, dict) else None
        if isinstance(shards, dict) and isinstance(saved.get("stream_arn"), str):
            self._stream_arn = saved["stream_arn"]
            self._shards = {str(k): str(v) for k, v in shards.items()}

    def positions(self, stream_arn: str) -> dict[str, str]:
        """Return {shard id: last processed sequence number} kept for this stream (empty for another)."""
        return dict(self._shards) if stream_arn == self._stream_arn else {}

    def save(self, stream_arn: str, shards: dict[str, str]) -> None:
        """Keep these positions (and write them to the file, atomically)."""
        self._stream_arn, self._shards = stream_arn, dict(shards)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps({"stream_arn": stream_arn, "shards": self._shards}, indent=1) + "\n")
            os.replace(partial, self.path)


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    iterator: str | None = None
    last_sequence: str | None = None
    finished: bool = False


class StreamRunner:
    """Poll a table's stream and invoke a Lambda-style handler with each batch."""

    def __init__(self, *, dynamodb, streams, table: str, handler: Handler, batch_size: int = 100,
                 idle_poll: float = 0.25, max_attempts: int = 3, retry_delay: float = 0.2,
                 reconnect_delay: float = 0.5, refresh_interval: float = 2.0, handler_timeout: float = 30.0,
                 checkpoints: Checkpoints | None = None, summary_interval: float = 10.0):
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.dynamodb = dynamodb
        self.streams = streams
        self.table = table
        self.handler = handler
        self.batch_size = batch_size
        self.idle_poll = idle_poll
        self.max_attempts = max_attempts
        self.retry_delay = retry_delay
        self.reconnect_delay = reconnect_delay
        self.refresh_interval = refresh_interval
        self.handler_timeout = handler_timeout
        self.checkpoints = checkpoints if checkpoints is not None else Checkpoints()
        self.summary_interval = summary_interval
        self.stream_arn: str | None = None
        self.stats: Counter[str] = Counter()
        self._window: Counter[str] = Counter()     # what the next summary line reports
        self._window_started = time.monotonic()
        self._shards: dict[str, _Shard] = {}
        self._next_refresh = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, config: Config, *, handler: Handler | None = None, **options) -> StreamRunner:
        """Build a runner for the configured endpoint and table, invoking the real handler unless one is given."""
        def client(service: str, attempts: int):
            return make_client(service, region=config.aws_region, endpoint_url=config.aws_endpoint_url,
                               timeout=config.ddb_timeout, max_attempts=attempts, pool_size=4)

        # The runner's own calls fail fast (its loop reconnects); the handler's client retries as in Lambda.
        handler = handler or lambda_handler(client("dynamodb", config.ddb_max_attempts), config.ddb_message_table)
        return cls(dynamodb=client("dynamodb", 1), streams=client("dynamodbstreams", 1),
                   table=config.ddb_message_table, handler=handler, **options)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> StreamRunner:
        """Run in a daemon thread; return self."""
        if self._thread is not None:
            raise RuntimeError("stream runner already started")
        self._thread = threading.Thread(target=self.run, name=f"stream-runner:{self.table}", daemon=True)
        self._thread.start()
        return self

    def request_stop(self) -> None:
        """Ask the loop to finish (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop and wait for its thread."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("stream runner did not stop within %.0fs", timeout)

    @property
    def running(self) -> bool:
        """True while the loop runs."""
        return self._thread is not None and self._thread.is_alive()

    def run(self) -> None:
        """Follow the stream until stop() is called."""
        log.info("stream runner: following table %s", self.table)
        trouble: str | None = None
        while not self._stop.is_set():
            try:
                if self.stream_arn is None or time.monotonic() >= self._next_refresh:
                    self._refresh()
                busy = self._poll_shards()
            except (BotoCoreError, ClientError, StreamUnavailable) as exc:
                message = str(exc) if isinstance(exc, StreamUnavailable) else f"stream unreachable: {exc}"
                if message != trouble:
                    log.warning("%s; retrying every %.1fs", message, self.reconnect_delay)
                    trouble = message
                self.stats["reconnects"] += 1
                self._forget_iterators()
                self._stop.wait(self.reconnect_delay)
                continue
            if trouble:
                log.info("stream runner: following %s again", self.stream_arn)
                trouble = None
            self._summarize()
            if not busy:
                self._stop.wait(self.idle_poll)
        self._summarize(final=True)
        log.info("stream runner: stopped")

    def _summarize(self, final: bool = False) -> None:
        """Log one INFO line for the batches since the last one, every summary_interval seconds (and at the end)."""
        elapsed = time.monotonic() - self._window_started
        if not final and elapsed < self.summary_interval:
            return
        if self._window["batches"]:
            window = self._window
            log.info("stream batch: %d records in %d handler calls over %.1f s (%d failed, %d given up)",
                     window["records"], window["batches"], elapsed, window["failed"], window["dropped"])
        self._window = Counter()
        self._window_started = time.monotonic()

    # --------------------------------------------------------------- stream

    def _refresh(self) -> None:
        """Re-describe the table and its stream: pick up a new stream and new shards."""
        try:
            table = self.dynamodb.describe_table(TableName=self.table)["Table"]
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                raise StreamUnavailable(f"waiting for table {self.table}") from exc
            raise
        arn = table.get("LatestStreamArn")
        if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
            raise StreamUnavailable(f"table {self.table} has no stream enabled")
        resume: dict[str, str] = {}
        if arn != self.stream_arn:
            resume = self.checkpoints.positions(arn)
            if resume:
                log.info("stream runner: resuming %s after the last processed record of %d shard(s)", arn,
                         len(resume))
            else:
                log.info("stream runner: reading %s from its oldest record", arn)
            self.stream_arn = arn
            self._shards = {}
        kwargs: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for shard in description.get("Shards", []):
                if shard["ShardId"] not in self._shards:
                    self._shards[shard["ShardId"]] = _Shard(shard["ShardId"], shard.get("ParentShardId"),
                                                            last_sequence=resume.get(shard["ShardId"]))
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        self._next_refresh = time.monotonic() + self.refresh_interval

    def _forget_iterators(self) -> None:
        """After a connection problem, resume every shard from its last sequence number."""
        for shard in self._shards.values():
            shard.iterator = None
        self._next_refresh = 0.0

    def _ready(self, shard: _Shard) -> bool:
        # A child shard waits until its parent is read to the end, as Lambda keeps per-key order.
        parent = self._shards.get(shard.parent_id) if shard.parent_id else None
        return not shard.finished and (parent is None or parent.finished)

    def _iterator(self, shard: _Shard) -> str:
        kwargs = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id}
        if shard.last_sequence:
            try:
                return self.streams.get_shard_iterator(
                    **kwargs, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=shard.last_sequence,
                )["ShardIterator"]
            except ClientError as exc:
                if _error_code(exc) == "ResourceNotFoundException":
                    raise
                log.warning("cannot resume %s after %s (%s): reading it from its oldest record",
                            shard.shard_id, shard.last_sequence, _error_code(exc))
        return self.streams.get_shard_iterator(**kwargs, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]

    def _poll_shards(self) -> bool:
        """Read one batch from every readable shard; return True if any had records."""
        busy = False
        for shard in list(self._shards.values()):
            if self._stop.is_set():
                break
            if not self._ready(shard):
                continue
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            try:
                response = self.streams.get_records(ShardIterator=shard.iterator, Limit=self.batch_size)
            except ClientError as exc:
                code = _error_code(exc)
                if code == "ExpiredIteratorException":
                    shard.iterator = None
                    continue
                if code == "TrimmedDataAccessException":
                    shard.iterator, shard.last_sequence = None, None
                    continue
                if code == "ResourceNotFoundException":
                    self.stream_arn = None
                raise
            records = response.get("Records", [])
            if records:
                busy = True
                if not self._deliver(shard, records):
                    break  # stopping in the middle of a batch: it is not done, so its position is not kept
                shard.last_sequence = records[-1]["dynamodb"]["SequenceNumber"]
                self.checkpoints.save(self.stream_arn or "", {
                    s.shard_id: s.last_sequence for s in self._shards.values() if s.last_sequence})
            shard.iterator = response.get("NextShardIterator")
            if shard.iterator is None:
                shard.finished = True
                self._next_refresh = 0.0  # look for its children now
                log.info("stream runner: shard %s closed", shard.shard_id)
        return busy

    # ------------------------------------------------------------- delivery

    def _deliver(self, shard: _Shard, records: list[dict]) -> bool:
        """Invoke the handler with a batch, retrying the records it reports as failed.

        Return True when the batch is done (delivered, or given up on as Lambda
        would), False when a stop interrupted its retries.
        """
        pending = [to_lambda_record(record, self.stream_arn or "") for record in records]
        failed: list[dict] = []
        for attempt in range(1, self.max_attempts + 1):
            started = time.perf_counter()
            failed = self._invoke(pending)
            for counts in (self.stats, self._window):
                counts["batches"] += 1
                counts["records"] += len(pending)
                counts["failed"] += len(failed)
            log.debug("stream batch: shard %s, %d records, %d failed, attempt %d, %.0f ms", shard.shard_id[-8:],
                      len(pending), len(failed), attempt, (time.perf_counter() - started) * 1000)
            if not failed:
                return True
            if attempt == self.max_attempts:
                break
            pending = failed
            if self._stop.wait(min(self.retry_delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)):
                return False
        self.stats["dropped"] += len(failed)
        self._window["dropped"] += len(failed)
        log.error("stream runner: giving up on %d records after %d attempts (AWS would send them to the "
                  "on-failure destination): %s", len(failed), self.max_attempts,
                  ", ".join(r["dynamodb"]["SequenceNumber"] for r in failed))
        return True

    def _invoke(self, records: list[dict]) -> list[dict]:
        """Call the handler once; return the records that failed, by Lambda's rules."""
        context = LocalContext(aws_request_id=str(uuid.uuid4()),
                               deadline=time.monotonic() + self.handler_timeout)
        try:
            response = self.handler({"Records": records}, context)
        except Exception:
            # Lambda treats a function error as a failure of the whole batch.
            log.exception("stream handler raised; the whole batch failed")
            return records
        failures = response.get("batchItemFailures") if isinstance(response, dict) else None
        if not failures:
            return []
        by_sequence = {record["dynamodb"]["SequenceNumber"]: record for record in records}
        wanted = [f.get("itemIdentifier") if isinstance(f, dict) else None for f in failures]
        if any(identifier not in by_sequence for identifier in wanted):
            log.warning("stream handler reported an unknown itemIdentifier; the whole batch failed")
            return records
        return [record for sequence, record in by_sequence.items() if sequence in set(wanted)]


# ------------------------------------------------------------------- starting

def start_thread(config: Config, **options) -> StreamRunner:
    """Start a runner thread against the configured table; call .stop() when done."""
    return StreamRunner.from_config(config, **options).start()


def command(state_file: Path | None = None) -> list[str]:
    """Return the command line that runs the runner as its own process (positions kept in state_file)."""
    return [sys.executable, "-m", "toolbox.stream_runner", *(["--state-file", str(state_file)] if state_file else [])]


def start_process(config: Config, log_path: Path | None = None, state_file: Path | None = None):
    """Run the runner as a child process (its own process group); return it as a local_services.Service.

    With no log_path its summary lines go to this process's terminal; with a
    state_file a restarted runner resumes where this one stopped.
    """
    return local_services.spawn("stream-runner", command(state_file), log_path, cwd=ROOT, env=child_env(config))


def main(argv: list[str] | None = None) -> int:
    """bin/ddb/stream-runner: feed the local table's stream to the messaging-stream handler until stopped."""
    parser = argparse.ArgumentParser(prog="bin/ddb/stream-runner", description=main.__doc__)
    parser.add_argument("--batch-size", type=int, default=100, help="records per handler call (1-1000)")
    parser.add_argument("--idle-poll", type=float, default=0.25, help="seconds between polls of an idle stream")
    parser.add_argument("--max-attempts", type=int, default=3, help="handler calls per batch before giving up")
    parser.add_argument("--state-file", type=Path, metavar="PATH",
                        help="keep each shard's position in this file and resume from it (default: in memory, "
                             "so every start reads the stream from its oldest record)")
    parser.add_argument("--summary-interval", type=float, default=10.0, metavar="SECONDS",
                        help="at most one summary line per this many seconds (default %(default)s)")
    parser.add_argument("--verbose", action="store_true",
                        help="also show one line per batch and the handler's own log lines")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("botocore").setLevel(logging.WARNING)

    from toolbox.scripts.common import config_for

    # In AWS the deployed Lambda does this; the runner is for DynamoDB Local only.
    config = config_for("local")
    runner = StreamRunner.from_config(config, batch_size=args.batch_size, idle_poll=args.idle_poll,
                                      max_attempts=args.max_attempts, checkpoints=Checkpoints(args.state_file),
                                      summary_interval=args.summary_interval)
    if args.verbose:
        log.setLevel(logging.DEBUG)
    else:
        # The handler's own lines (as in CloudWatch) only on request.
        logging.getLogger(HANDLER_MODULE).setLevel(logging.WARNING)

    def on_signal(_signum, _frame):
        runner.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("stream runner: %s at %s", config.ddb_message_table, config.aws_endpoint_url)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
