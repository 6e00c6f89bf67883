#!/usr/bin/env bash
# bench-observe.sh: what watching a colony costs, and how fast the watchers see it.
#
# Starts its own `reef up` (HOME, XDG dirs and everything else in a temp dir; all traffic on
# loopback) and measures, at N gateways:
#
#   1. the CPU an attached client costs `reef up` (utime+stime of the reef up process only,
#      from /proc/PID/stat, children excluded): an idle window with no client (before and
#      after), then with CLIENTS x `reef status --watch` (in a pty), CLIENTS x `reef events`,
#      and CLIENTS x `reef top` (in a pty) when the binary has a `top` verb. Cost per client =
#      (CPU % with the clients - baseline CPU %) / CLIENTS, in % of one core. Target < 0.1 %.
#      /proc/PID/stat counts in clock ticks (1 tick = 0.033 % over 30 s), so the run time of
#      reef's live threads (/proc/PID/task/*/schedstat, ns) is shown beside it and decides the
#      verdict when no thread ended during the windows.
#      Also: what one status request costs reef (a burst of requests on the control socket),
#      the size of a status answer, and the processes in /proc reef walks per status.
#   2. redraw latency: `reef events --json` and `reef status --watch` attached (and `reef top`
#      in a pty, if there), CHANGES times `reef stop NAME` then `reef start NAME`; the time from
#      sending the command to the client reading the first line that shows the change (for top:
#      the first output holding the new state's word). Target < 100 ms.
#   3. `reef logs -f` throughput: a second topology of N `runtime = "command"` gateways (a
#      python flood program that also answers /readyz and /healthz on its port), together
#      writing RATE_MB MB/s of numbered lines for FLOOD_SECS; `reef logs -f` (every gateway)
#      is read through a pipe and every line is checked: each gateway's sequence exactly once,
#      in order. Reports the MB/s written, the MB/s logs -f delivered, and the lag after the
#      floods stopped. Then a rotation round: ROT_GW gateways at ROT_RATE_MB MB/s each for
#      ROT_SECS, so their logs pass reef's 10 MiB rotation, checked the same way.
#   4. a summary table: metric, measured, target, pass/fail.
#
# `reef status --watch` follows reef's events and asks for a status on each change and once a
# second otherwise, whether or not its stdout is a terminal (only the screen clear differs): the
# CPU phase runs it in a pty as a user would, the latency phase reads it through a pipe.
#
# Usage: tools/bench-observe.sh    (from anywhere; about 3 minutes with the defaults, 3.5 with top)
#
# Environment (defaults in brackets):
#   REEF_BIN     the reef binary   [$CARGO_TARGET_DIR/release/reef, else <repo>/target/release/reef]
#   N            gateways          [50]
#   BASE, STEP   base port of the first gateway, spacing  [20000, 200]  (below the ephemeral range;
#                every footprint [B, B+110] must be free: checked before each topology starts)
#   WINDOW       seconds of each CPU window  [30]
#   SETTLE       seconds between attaching clients and the window  [3]
#   CLIENTS      clients of each kind at once  [1]
#   CHANGES      stop+start pairs for the latency  [10]
#   RATE_MB      MB/s all flood gateways write together  [10]
#   FLOOD_SECS   seconds of flood  [10]
#   LINE_BYTES   bytes per flood line  [100]
#   TICK_MS      each flood gateway writes its due lines in one write() every TICK_MS  [10]
#   ROT_GW, ROT_RATE_MB, ROT_SECS  the rotation round [2 gateways, 8 MB/s each, 4 s]; ROT_GW=0 skips it
#   PHASES       which phases to run  ["cpu latency logs"]
#   TOP_ARGS     arguments after `reef top` (the script path is appended)  [""]
#   PERF=1       profile reef up (perf record) during the status-request burst of phase 1
#   KEEP_TMP=1   keep the temp dir (logs of reef up, the logs -f capture) for a look afterwards
#
# Exit status: 0 when every measured target passes, 1 when one misses, 2 when the run failed.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
  DEFAULT_BIN="$CARGO_TARGET_DIR/release/reef"
else
  DEFAULT_BIN="$REPO/target/release/reef"
fi
REEF_BIN=${REEF_BIN:-$DEFAULT_BIN}
N=${N:-50}
BASE=${BASE:-20000}
STEP=${STEP:-200}
WINDOW=${WINDOW:-30}
SETTLE=${SETTLE:-3}
CLIENTS=${CLIENTS:-1}
CHANGES=${CHANGES:-10}
RATE_MB=${RATE_MB:-10}
FLOOD_SECS=${FLOOD_SECS:-10}
LINE_BYTES=${LINE_BYTES:-100}
TICK_MS=${TICK_MS:-10}
ROT_GW=${ROT_GW:-2}
ROT_RATE_MB=${ROT_RATE_MB:-8}
ROT_SECS=${ROT_SECS:-4}
PHASES=${PHASES:-"cpu latency logs"}
TOP_ARGS=${TOP_ARGS:-}

[[ -x "$REEF_BIN" ]] || { echo "bench-observe: no reef binary at $REEF_BIN (cargo build --release, or set REEF_BIN)" >&2; exit 2; }
REEF_BIN=$(cd "$(dirname "$REEF_BIN")" && pwd)/$(basename "$REEF_BIN")
PYTHON=$(python3 -c 'import sys; print(sys.executable)') || { echo "bench-observe: python3 is needed" >&2; exit 2; }
(( N >= 1 && STEP >= 111 )) || { echo "bench-observe: N must be >= 1 and STEP >= 111" >&2; exit 2; }
if (( BASE + (N - 1) * STEP + 110 > 65535 || BASE < 1024 )); then
  echo "bench-observe: ports $BASE..$((BASE + (N - 1) * STEP + 110)) do not fit in 1024..65535" >&2; exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/bench-observe.XXXXXX")
mkdir -p "$TMP/home" "$TMP/run" "$TMP/ctl"
chmod 700 "$TMP/run"
HELPER="$TMP/helper.py"
RESULTS="$TMP/results.jsonl"
: > "$RESULTS"

# Everything reef and the clients touch lives in the temp dir.
export HOME="$TMP/home" XDG_RUNTIME_DIR="$TMP/run" XDG_STATE_HOME="$TMP/home/.local/state" \
  XDG_CONFIG_HOME="$TMP/home/.config" XDG_CACHE_HOME="$TMP/home/.cache" NO_COLOR=1
unset REEF_SCRIPT OPENCLAW_HOME OPENCLAW_PROFILE OPENCLAW_STATE_DIR OPENCLAW_CONFIG_PATH RUST_LOG || true

UP_PID=""        # the reef up this script started (leader of its own process group)
UP_SCRIPT=""
HELPER_PID=""    # the python helper running in the background right now

say() { printf '\n== %s\n' "$*"; }

stop_reef() {
  [[ -n "$UP_SCRIPT" ]] || return 0
  if [[ -n "$UP_PID" ]] && kill -0 "$UP_PID" 2>/dev/null; then
    timeout 60 "$REEF_BIN" down "$UP_SCRIPT" >/dev/null 2>&1 || true
    for _ in $(seq 100); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$UP_PID" 2>/dev/null; then
      kill -TERM "$UP_PID" 2>/dev/null || true
      for _ in $(seq 150); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$UP_PID" 2>/dev/null || true
    fi
  fi
  wait "$UP_PID" 2>/dev/null || true
  # Without a reef, `reef down` stops what its ledger and markers prove is this topology's.
  timeout 60 "$REEF_BIN" down "$UP_SCRIPT" >/dev/null 2>&1 || true
  UP_PID=""
  UP_SCRIPT=""
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -n "$HELPER_PID" ]] && kill -0 "$HELPER_PID" 2>/dev/null; then
    kill -TERM "$HELPER_PID" 2>/dev/null || true   # it ends its own clients (own groups) on TERM
    wait "$HELPER_PID" 2>/dev/null || true
  fi
  stop_reef
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then
    echo "bench-observe: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs the helper in the background (so a signal reaches the trap at once) and waits for it.
helper() {
  "$PYTHON" "$HELPER" "$@" &
  HELPER_PID=$!
  local rc=0
  wait "$HELPER_PID" || rc=$?
  HELPER_PID=""
  return "$rc"
}

start_reef() { # SCRIPT LABEL
  local script=$1 label=$2
  if ! helper ports-free "$BASE" "$STEP" "$N"; then
    echo "bench-observe: ports are taken; set BASE (and STEP) to a free range" >&2
    exit 2
  fi
  UP_SCRIPT=$script
  setsid "$REEF_BIN" up "$script" >"$TMP/up-$label.out" 2>"$TMP/up-$label.err" </dev/null &
  UP_PID=$!
  sleep 0.2
  kill -0 "$UP_PID" 2>/dev/null || { echo "bench-observe: reef up exited:" >&2; cat "$TMP/up-$label.err" >&2; exit 2; }
  local comm
  comm=$(cat "/proc/$UP_PID/comm")
  [[ "$comm" == reef ]] || { echo "bench-observe: pid $UP_PID is $comm, not reef" >&2; exit 2; }
  local t0=$SECONDS
  helper wait-ready "$REEF_BIN" "$script" "$N" 180 || { echo "bench-observe: the gateways did not all get ready; see $TMP/up-$label.err" >&2; KEEP_TMP=1; exit 2; }
  echo "reef up pid $UP_PID: $N gateways ready after $((SECONDS - t0)) s"
}

write_builtin_topology() { # PATH
  {
    echo '-- bench-observe: built-in gateways'
    echo 'reef.defaults { runtime = "builtin" }'
    for ((i = 0; i < N; i++)); do
      printf 'reef.gateway { profile = "g%03d", port = %d }\n' "$i" $((BASE + i * STEP))
    done
  } >"$1"
}

write_flood_topology() { # PATH
  {
    echo '-- bench-observe: flood gateways (runtime command)'
    for ((i = 0; i < N; i++)); do
      printf 'reef.gateway { profile = "f%03d", port = %d, command = { "%s", "%s", "flood", "--ctl", "%s", "--line-bytes", "%d" } }\n' \
        "$i" $((BASE + i * STEP)) "$PYTHON" "$HELPER" "$TMP/ctl" "$LINE_BYTES"
    done
  } >"$1"
}

cat >"$HELPER" <<'PYTHON'
"""bench-observe's helper: measurements, clients, the flood gateway, the summary."""
import argparse, fcntl, glob, json, os, pty, random, re, signal, socket, statistics
import shutil, struct, subprocess, sys, termios, threading, time

TICK = os.sysconf("SC_CLK_TCK")
CHILDREN = []  # Popen objects this helper started (each the leader of its own group)


def on_term(signum, frame):
    raise SystemExit(143)


signal.signal(signal.SIGTERM, on_term)


def end_children():
    for child in CHILDREN:
        if child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGTERM)  # its own group: only what we started
            except ProcessLookupError:
                pass
    deadline = time.time() + 3
    for child in CHILDREN:
        try:
            child.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()
    CHILDREN.clear()


def record(results, obj):
    with open(results, "a") as f:
        f.write(json.dumps(obj) + "\n")


def cpu_ticks(pid):
    """utime+stime of one process (its threads, dead ones too; not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ns(pid):
    """Run time in ns of each live thread of a process (/proc/PID/task/TID/schedstat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[tid] = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return out


def ns_delta(before, after):
    """Run time between two thread_ns samples; None when a thread ended in between (its time
    is gone from /proc/PID/task)."""
    if any(tid not in after for tid in before):
        return None
    return sum(ns - before.get(tid, 0) for tid, ns in after.items())


def listening_ports():
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":  # LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def cmd_ports_free(a):
    busy = listening_ports()
    taken = []
    for i in range(a.n):
        base = a.base + i * a.step
        hit = sorted(p for p in busy if base <= p <= base + 110)
        if hit:
            taken.append((base, hit))
    # The ports that must bind must also be bindable (TIME_WAIT and the like are fine).
    for i in range(a.n):
        for port in (a.base + i * a.step, a.base + i * a.step + 2):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError as err:
                taken.append((port, [str(err)]))
            finally:
                s.close()
    for base, hit in taken[:10]:
        print(f"footprint of base {base}: taken {hit}", file=sys.stderr)
    return 1 if taken else 0


def status_json(reef, script):
    out = subprocess.run([reef, "status", "--json", script], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return None
    return json.loads(out.stdout)


def cmd_wait_ready(a):
    deadline = time.time() + a.timeout
    last = None
    while time.time() < deadline:
        try:
            st = status_json(a.reef, a.script)
        except (subprocess.TimeoutExpired, json.JSONDecodeError):
            st = None
        if st:
            states = [i["state"] for i in st["instances"]]
            last = {s: states.count(s) for s in set(states)}
            if len(states) == a.n and all(s == "ready" for s in states):
                return 0
        time.sleep(0.5)
    print(f"not all ready: {last}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------------------------------------
# Clients


class PtyClient:
    """A command in a pseudo-terminal of ROWSxCOLS; its output is drained (and counted)."""

    def __init__(self, argv, rows=60, cols=200, record=False):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        def setup():
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        env = dict(os.environ, TERM="xterm-256color", COLUMNS=str(cols), LINES=str(rows))
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=setup, env=env, close_fds=True)
        CHILDREN.append(self.proc)
        os.close(slave)
        self.master = master
        self.bytes = 0
        self.record = record
        self.chunks = []  # (time read, bytes), when recording
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.bytes += len(chunk)
            if self.record:
                now = time.time()
                with self.cond:
                    self.chunks.append((now, chunk))
                    self.cond.notify_all()
            if b"\x1b[6n" in chunk:  # a cursor position query: answer as a terminal would
                try:
                    os.write(self.master, b"\x1b[1;1R")
                except OSError:
                    pass


    def wait_for(self, since, words, timeout):
        """When the terminal was first sent one of `words` after `since` (a redraw of the
        changed cells holds the new state's word whole)."""
        deadline = time.time() + timeout
        start = 0
        with self.cond:
            while True:
                for i in range(start, len(self.chunks)):
                    t, chunk = self.chunks[i]
                    if t >= since and any(w in chunk for w in words):
                        return t
                start = len(self.chunks)
                left = deadline - time.time()
                if left <= 0:
                    return None
                self.cond.wait(left)


class PlainClient:
    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        CHILDREN.append(self.proc)
        self.bytes = None


def client_argv(kind, reef, script, top_args):
    if kind == "watch":
        return [reef, "status", "--watch", script]
    if kind == "events":
        return [reef, "events", script]
    if kind == "top":
        return [reef, "top"] + top_args.split() + [script]
    raise ValueError(kind)


def control_socket():
    socks = glob.glob(os.path.join(os.environ["XDG_RUNTIME_DIR"], "reef", "*.sock"))
    return socks[0] if len(socks) == 1 else None


def status_request(path):
    """One status request on the control socket, as the clients send it: its answer's size."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b'{"verb":"status"}\n')
    size = 0
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        size += len(chunk)
    s.close()
    return size


def cmd_cpu(a):
    pid = a.pid
    kinds = a.kinds.split()
    results = {}

    def window(label, clients):
        time.sleep(a.settle)
        for c in clients:
            if c.proc.poll() is not None:
                return {"label": label, "error": f"client exited with {c.proc.returncode}"}
        b0 = [c.bytes for c in clients]
        c0 = [cpu_ticks(c.proc.pid) for c in clients]
        t0, r0, n0 = time.time(), cpu_ticks(pid), thread_ns(pid)
        time.sleep(a.window)
        t1, r1, n1 = time.time(), cpu_ticks(pid), thread_ns(pid)
        ns = ns_delta(n0, n1)
        c1 = [cpu_ticks(c.proc.pid) for c in clients]
        b1 = [c.bytes for c in clients]
        alive = all(c.proc.poll() is None for c in clients)
        out = {
            "label": label, "clients": len(clients), "seconds": t1 - t0, "ticks": r1 - r0,
            "percent": (r1 - r0) / TICK / (t1 - t0) * 100,
            "precise": None if ns is None else ns / 1e9 / (t1 - t0) * 100,
            "client_percent": sum(y - x for x, y in zip(c0, c1)) / TICK / (t1 - t0) * 100 / max(1, len(clients)),
            "alive": alive,
        }
        if clients and clients[0].bytes is not None:
            out["client_out_bytes_per_s"] = sum(y - x for x, y in zip(b0, b1)) / (t1 - t0) / len(clients)
        print(f"  {label:<16} reef up {out['ticks']:4d} ticks in {out['seconds']:.1f} s = {out['percent']:.3f} % of a core"
              + (f" (schedstat: {out['precise']:.3f} %)" if out["precise"] is not None else " (schedstat: a thread ended)")
              + (f"; each client itself {out['client_percent']:.2f} %" if clients else "")
              + (f", writes {out['client_out_bytes_per_s']:.0f} B/s to its terminal" if "client_out_bytes_per_s" in out else "")
              + ("" if alive else "  (a client died during the window!)"), flush=True)
        return out

    base = [window("no client", [])]
    for kind in kinds:
        argv = client_argv(kind, a.reef, a.script, a.top_args)
        tty = kind in ("watch", "top")
        clients = [(PtyClient(argv) if tty else PlainClient(argv)) for _ in range(a.clients)]
        try:
            results[kind] = window(f"{a.clients} x {kind}", clients)
        finally:
            end_children()
    base.append(window("no client again", []))
    baseline = statistics.mean(b["percent"] for b in base)
    print(f"  baseline (mean of both): {baseline:.3f} %; one tick over the window is "
          f"{100 / TICK / a.window:.3f} %", flush=True)
    for kind, res in results.items():
        if "error" in res:
            record(a.results, {"metric": f"cpu-{kind}", "error": res["error"]})
            print(f"  {kind}: {res['error']}")
            continue
        per_client = (res["percent"] - baseline) / a.clients
        precise = [b["precise"] for b in base] + [res["precise"]]
        if all(x is not None for x in precise):
            res["per_client_precise"] = (res["precise"] - statistics.mean(precise[:-1])) / a.clients
        res.update(metric=f"cpu-{kind}", baseline=baseline, per_client=per_client,
                   resolution=100 / TICK / a.window / a.clients)
        record(a.results, res)
        print(f"  cost per {kind} client: {per_client:.3f} % of a core"
              + (f" (schedstat: {res['per_client_precise']:.3f} %)" if "per_client_precise" in res else ""), flush=True)

    # Where a status --watch client's cost comes from: one status request each second.
    sock = control_socket()
    if sock:
        size = status_request(sock)
        burst = a.burst
        perf = None
        perf_data = os.path.join(os.path.dirname(a.results), "perf.data")
        if os.environ.get("PERF") == "1" and shutil.which("perf"):
            perf = subprocess.Popen(["perf", "record", "-q", "-F", "1999", "--call-graph", "dwarf,16384",
                                     "-p", str(pid), "-o", perf_data], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            CHILDREN.append(perf)
            time.sleep(1)
        r0, t0 = cpu_ticks(pid), time.time()
        for _ in range(burst):
            status_request(sock)
        r1, t1 = cpu_ticks(pid), time.time()
        if perf:
            os.killpg(perf.pid, signal.SIGINT)
            perf.wait(60)
            report = subprocess.run(["perf", "report", "-i", perf_data, "--children", "--sort", "symbol",
                                     "--stdio", "-g", "none"], capture_output=True, text=True).stdout
            print("  perf, share of reef up's samples during the burst (inclusive):")
            wanted = [("control::serve", "a control connection (reef::control::serve)"),
                      ("Colony::snapshot", "the status snapshot (Colony::snapshot)"),
                      ("of_sessions", "the /proc walk (host::usage::of_sessions)"),
                      ("read_to_string", "reading /proc/PID/stat (fs::read_to_string)"),
                      ("to_string<reef::control::Response>", "the JSON answer (serde_json::to_string)")]
            for key, label in wanted:
                for line in report.splitlines():
                    if key in line and "%" in line:
                        print(f"    {line.split()[0]:>7}  {label}")
                        break
        per_request_ms = (r1 - r0) / TICK * 1000 / burst
        nproc = len([d for d in os.listdir("/proc") if d.isdigit()])
        record(a.results, {"metric": "status-request", "bytes": size, "cpu_ms": per_request_ms,
                           "wall_ms": (t1 - t0) * 1000 / burst, "procs": nproc})
        print(f"  one status request: {size} bytes of JSON, {per_request_ms:.2f} ms of reef CPU "
              f"({(t1 - t0) * 1000 / burst:.2f} ms round trip; {burst} back to back), "
              f"{nproc} processes in /proc walked per request", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Redraw latency


class LineReader:
    """Reads a client's stdout pipe; every line kept with the time it was read."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        CHILDREN.append(self.proc)
        self.lines = []  # (time read, text)
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            now = time.time()
            with self.cond:
                self.lines.append((now, raw.decode(errors="replace").rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, since, match, timeout):
        """The first (time, parsed) after `since` for which match(text) is not None."""
        deadline = time.time() + timeout
        start = 0
        with self.cond:
            while True:
                for i in range(start, len(self.lines)):
                    t, text = self.lines[i]
                    if t < since:
                        continue
                    got = match(text)
                    if got is not None:
                        return t, got
                start = len(self.lines)
                left = deadline - time.time()
                if left <= 0:
                    return None, None
                self.cond.wait(left)


def event_matcher(name, kinds):
    def match(text):
        try:
            ev = json.loads(text)
        except json.JSONDecodeError:
            return None
        if ev.get("instance") == name and (kinds is None or ev.get("kind") in kinds):
            return ev
        return None
    return match


def row_matcher(name, states):
    def match(text):
        parts = text.split()
        if len(parts) >= 2 and parts[0] == name and parts[1] in states:
            return parts[1]
        return None
    return match


def summarize(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return {"n": 0, "median": None, "max": None}
    return {"n": len(xs), "median": statistics.median(xs), "max": max(xs), "min": min(xs)}


def cmd_latency(a):
    names = a.names.split()
    events = LineReader([a.reef, "events", "--json", a.script])
    watch = LineReader([a.reef, "status", "--watch", a.script])
    top = None
    if a.top:
        top = PtyClient(client_argv("top", a.reef, a.script, a.top_args), rows=len(names) + 40, record=True)
    time.sleep(2)
    ev_first, ev_final, ev_reef, ev_deliver, watch_first, cmd_ms, top_first = [], [], [], [], [], [], []
    missing = 0
    try:
        for i in range(a.changes):
            name = names[(i * 7) % len(names)]
            for verb, first_kinds, final_kind, shown in (
                ("stop", None, "stopped", ("stopping", "stopped")),
                ("start", None, "ready", ("waiting", "starting", "ready")),
            ):
                time.sleep(random.uniform(0.2, 1.2))  # any phase of status --watch's 1 s poll
                t0 = time.time()
                done = subprocess.run([a.reef, verb, name, a.script], capture_output=True, timeout=60)
                cmd_ms.append((time.time() - t0) * 1000)
                if done.returncode != 0:
                    print(f"  reef {verb} {name} failed: {done.stderr.decode()}", file=sys.stderr)
                    return 2
                t_first, ev1 = events.wait_for(t0, event_matcher(name, first_kinds), 5)
                t_final, ev2 = events.wait_for(t0, event_matcher(name, {final_kind}), 10)
                t_row, state = watch.wait_for(t0, row_matcher(name, shown), 5)
                t_top = top.wait_for(t0, [w.encode()[:5] for w in shown], 5) if top else None
                if top:
                    top_first.append(None if t_top is None else (t_top - t0) * 1000)
                if t_first is None or t_final is None or t_row is None:
                    missing += 1
                ms = lambda t: None if t is None else (t - t0) * 1000
                ev_first.append(ms(t_first))
                ev_final.append(ms(t_final))
                if ev1:
                    ev_reef.append((ev1["time"] - t0) * 1000)
                    ev_deliver.append((t_first - ev1["time"]) * 1000)
                watch_first.append(ms(t_row))
                print(f"  {verb:<5} {name}: events first line {ms(t_first) or float('nan'):6.1f} ms"
                      f" ({ev1['kind'] if ev1 else '-'}), {final_kind} {ms(t_final) or float('nan'):6.1f} ms;"
                      f" status --watch shows {state or '-'} after {ms(t_row) or float('nan'):6.1f} ms"
                      + (f"; top {ms(t_top) or float('nan'):6.1f} ms" if top else ""), flush=True)
    finally:
        end_children()
    res = {"metric": "latency", "changes": 2 * a.changes, "missing": missing,
           "events_first": summarize(ev_first), "events_final": summarize(ev_final),
           "events_reef_side": summarize(ev_reef), "events_delivery": summarize(ev_deliver),
           "watch": summarize(watch_first), "command_ms": summarize(cmd_ms)}
    if top:
        res["top"] = summarize(top_first)
        res["top_missing"] = sum(1 for x in top_first if x is None)
    record(a.results, res)
    f = lambda s: f"median {s['median']:.1f} ms, max {s['max']:.1f} ms" if s["n"] else "none seen"
    print(f"  reef events --json, first line:  {f(res['events_first'])}")
    print(f"     of which command to event time (reef side): {f(res['events_reef_side'])};"
          f" event time to the client's read: {f(res['events_delivery'])}")
    print(f"  reef events --json, stopped/ready: {f(res['events_final'])}")
    print(f"  reef status --watch, first redraw showing it: {f(res['watch'])}")
    if top:
        print(f"  reef top (pty), first output holding the new state: {f(res['top'])}")
    print(f"  the reef stop/start command itself took: {f(res['command_ms'])}")
    return 0


# ---------------------------------------------------------------------------------------------
# The flood gateway


def cmd_flood(a):
    import http.server

    name = os.environ.get("REEF_INSTANCE") or os.environ.get("OPENCLAW_PROFILE")
    port = int(os.environ["OPENCLAW_GATEWAY_PORT"])

    class Probe(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/readyz"):
                body = b'{"ready":true}'
            elif self.path.startswith("/healthz"):
                body = b'{"ok":true}'
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Probe)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.write(1, f"{name} flood gateway listening on 127.0.0.1:{port}\n".encode())

    nm = name.encode()
    rnd = 1
    while True:
        go = os.path.join(a.ctl, f"go.{rnd}.json")
        while not os.path.exists(go):
            time.sleep(0.05)
        with open(go) as f:
            spec = json.load(f)
        rate = spec.get("rates", {}).get(name, spec.get("rate", 0))
        if rate <= 0:
            rnd += 1
            continue
        line_bytes = spec.get("line_bytes", a.line_bytes)
        head = len(b"%s %d %08d " % (nm, rnd, 0))
        pad = b"x" * max(1, line_bytes - head - 1)
        per_line = head + len(pad) + 1
        lines_per_s = rate / per_line
        while time.time() < spec["start"]:
            time.sleep(0.002)
        t_start = time.time()
        mono0 = time.monotonic()
        end = mono0 + spec["duration"]
        sent = 0
        written = 0
        writes = 0
        tick = spec.get("tick", 0.01)
        while True:
            now = time.monotonic()
            due = int(lines_per_s * (min(now, end) - mono0))
            if due > sent:
                data = b"".join(b"%s %d %08d %s\n" % (nm, rnd, s, pad) for s in range(sent, due))
                view = memoryview(data)
                while view:
                    n = os.write(1, view)
                    view = view[n:]
                    writes += 1
                written += len(data)
                sent = due
            if now >= end:
                break
            time.sleep(tick)
        t_end = time.time()
        tail = b"%s %d END %d %.6f\n" % (nm, rnd, sent, t_end)
        os.write(1, tail)
        written += len(tail)
        done = {"name": name, "round": rnd, "lines": sent, "bytes": written, "writes": writes, "start": t_start, "end": t_end}
        tmp = os.path.join(a.ctl, f".done.{rnd}.{name}")
        with open(tmp, "w") as f:
            json.dump(done, f)
        os.rename(tmp, os.path.join(a.ctl, f"done.{rnd}.{name}.json"))
        rnd += 1


# ---------------------------------------------------------------------------------------------
# reef logs -f under a flood

LINE = re.compile(rb"^(\S+)\s+\| (?:\d\d:\d\d:\d\d~ )?(\S+) (\d+) (\d{8}|END)(?: (\d+))?")


def cmd_logs(a):
    names = a.names.split()
    flooding = names[: a.only] if a.only else names
    rate = a.rate_mb * 1e6 / len(flooding)
    rnd = a.round
    capture = os.path.join(os.path.dirname(a.results), f"logs-f.{rnd}.out")
    out = open(capture, "wb")
    proc = subprocess.Popen([a.reef, "logs", "-f", a.script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    CHILDREN.append(proc)
    marker = b" %d END " % rnd
    state = {"bytes": 0, "ends": 0, "first": None, "last_end": None, "go": None, "samples": []}
    lock = threading.Lock()

    def read():
        rest = b""
        fd = proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            now = time.time()
            out.write(chunk)
            data = rest + chunk
            cut = data.rfind(b"\n") + 1
            complete, rest = data[:cut], data[cut:]
            ends = complete.count(marker)
            with lock:
                state["bytes"] += len(chunk)
                if state["go"] is not None and state["first"] is None:
                    state["first"] = now
                if ends:
                    state["ends"] += ends
                    state["last_end"] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.5)  # logs -f has printed the history and follows
    with lock:
        history_bytes = state["bytes"]
        state["go"] = time.time()
    spec = {"round": rnd, "start": time.time() + 0.5, "duration": a.secs,
            "rates": {n: (rate if n in flooding else 0) for n in names}, "line_bytes": a.line_bytes, "tick": a.tick_ms / 1000}
    tmp = os.path.join(a.ctl, f".go.{rnd}")
    with open(tmp, "w") as f:
        json.dump(spec, f)
    os.rename(tmp, os.path.join(a.ctl, f"go.{rnd}.json"))
    up0, lf0, t_go = cpu_ticks(a.pid), cpu_ticks(proc.pid), time.time()

    # Wait for every flood to report done, then for logs -f to print every END line.
    deadline = spec["start"] + a.secs + 60
    done = {}
    while time.time() < deadline and len(done) < len(flooding):
        for n in flooding:
            p = os.path.join(a.ctl, f"done.{rnd}.{n}.json")
            if n not in done and os.path.exists(p):
                with open(p) as f:
                    done[n] = json.load(f)
        time.sleep(0.05)
    up1, t_floods = cpu_ticks(a.pid), time.time()
    last_change, last_bytes = time.time(), -1
    while time.time() < deadline:
        with lock:
            if state["ends"] >= len(flooding):
                break
            if state["bytes"] != last_bytes:
                last_bytes, last_change = state["bytes"], time.time()
        if time.time() - last_change > 10:
            break  # nothing more is coming
        time.sleep(0.02)
    time.sleep(0.3)
    lf1, t_lf = cpu_ticks(proc.pid), time.time()
    end_children()
    reader.join(5)
    out.close()

    # Check every line.
    seqs = {n: [] for n in flooding}
    counted = {}
    other = 0
    payload = 0
    bad_prefix = 0
    with open(capture, "rb") as f:
        for raw in f:
            m = LINE.match(raw)
            if not m or int(m.group(3)) != rnd:
                other += 1
                continue
            prefix, who, tok = m.group(1).decode(), m.group(2).decode(), m.group(4)
            if prefix != who:
                bad_prefix += 1
            if who not in seqs:
                continue
            if tok == b"END":
                counted[who] = int(m.group(5))
            else:
                seqs[who].append(int(tok))
                payload += 1
    lost = dup = disorder = gaps = lost_on_disk = 0
    worst = None
    for n in flooding:
        got = seqs[n]
        expected = done.get(n, {}).get("lines", counted.get(n, 0))
        distinct = set(got)
        dup += len(got) - len(distinct)
        disorder += sum(1 for x, y in zip(got, got[1:]) if y < x)
        missing = [s for s in range(expected) if s not in distinct]
        gaps += sum(1 for i, s in enumerate(missing) if i == 0 or missing[i - 1] != s - 1)
        lost += len(missing)
        if missing and (worst is None or len(missing) > worst[1]):
            worst = (n, len(missing))
        if missing:
            # Are the lines logs -f missed on disk (in NAME.log, .1, .2)?
            on_disk = set()
            for suffix in ("", ".1", ".2"):
                try:
                    with open(os.path.join(a.logs_dir, f"{n}.log{suffix}"), "rb") as f:
                        for raw in f:
                            parts = raw.split(b" ", 3)
                            if len(parts) >= 3 and parts[0] == n.encode() and parts[1] == b"%d" % rnd and parts[2] != b"END":
                                on_disk.add(int(parts[2]))
                except FileNotFoundError:
                    pass
            lost_on_disk += sum(1 for s in missing if s not in on_disk)
    starts = [d["start"] for d in done.values()]
    ends = [d["end"] for d in done.values()]
    written = sum(d["bytes"] for d in done.values())
    writes = sum(d.get("writes", 0) for d in done.values())
    span = (max(ends) - min(starts)) if done else float("nan")
    write_rate = written / span / 1e6 if done else 0
    with lock:
        delivered = state["bytes"] - history_bytes
        first, last_end = state["first"], state["last_end"]
        all_ends = state["ends"] >= len(flooding)
    deliver_span = ((last_end or t_lf) - min(starts)) if done else float("nan")
    lag = (last_end - max(ends)) if (done and last_end and all_ends) else None
    rotated = [n for n in flooding if os.path.exists(os.path.join(a.logs_dir, f"{n}.log.1"))]
    res = {
        "metric": "logs-round" if rnd == 1 else "logs-rotation", "round": rnd,
        "gateways": len(flooding), "done": len(done), "target_mb": a.rate_mb,
        "written_mb": written / 1e6, "write_mb_s": write_rate, "flood_secs": span, "writes_per_s": writes / span if done else 0,
        "delivered_mb": delivered / 1e6, "deliver_mb_s": delivered / deliver_span / 1e6 if done else 0,
        "lines_expected": sum(d["lines"] for d in done.values()), "lines_seen": payload,
        "lost": lost, "lost_on_disk": lost_on_disk, "duplicates": dup, "out_of_order": disorder, "gaps": gaps,
        "worst": worst, "bad_prefix": bad_prefix, "all_ends_seen": all_ends, "lag_s": lag,
        "reef_up_cpu_percent": (up1 - up0) / TICK / (t_floods - t_go) * 100,
        "logs_f_cpu_percent": (lf1 - lf0) / TICK / (t_lf - t_go) * 100,
        "rotated": rotated, "capture": capture,
    }
    record(a.results, res)
    print(f"  {len(done)}/{len(flooding)} gateways flooded {res['written_mb']:.1f} MB in {span:.2f} s:"
          f" {write_rate:.2f} MB/s written (asked {a.rate_mb} MB/s), in {res['writes_per_s']:.0f} write() calls/s")
    print(f"  reef logs -f delivered {res['delivered_mb']:.1f} MB (with its prefixes) in {deliver_span:.2f} s:"
          f" {res['deliver_mb_s']:.2f} MB/s; lines {payload}/{res['lines_expected']}:"
          f" lost {lost} (in {gaps} gaps), duplicated {dup}, out of order {disorder}"
          + (f"; worst {worst[0]}: {worst[1]} lost" if worst else ""))
    if lost:
        print(f"  of the {lost} lines logs -f did not print, {lost - lost_on_disk} are in the log files"
              f" (NAME.log, .1, .2) and {lost_on_disk} are on disk nowhere")
    print(f"  lag after the floods stopped: " + (f"{lag * 1000:.0f} ms" if lag is not None else "END lines missing")
          + f"; reef up used {res['reef_up_cpu_percent']:.1f} % of a core during the flood,"
          f" reef logs -f {res['logs_f_cpu_percent']:.1f} %")
    print(f"  logs rotated during the round: {len(rotated)} of {len(flooding)}"
          + (f" ({', '.join(rotated[:5])}{'...' if len(rotated) > 5 else ''})" if rotated else ""))
    return 0


# ---------------------------------------------------------------------------------------------
# Summary


def cmd_summary(a):
    rows = []
    by = {}
    with open(a.results) as f:
        for line in f:
            r = json.loads(line)
            by.setdefault(r["metric"], r)

    def add(metric, measured, target, ok):
        rows.append((metric, measured, target, {True: "PASS", False: "FAIL", None: "info"}[ok]))

    for kind, label in (("watch", "status --watch"), ("events", "events"), ("top", "top")):
        r = by.get(f"cpu-{kind}")
        if r is None:
            if kind == "top" and a.no_top and any(k.startswith("cpu-") for k in by):
                add(f"cost per client: reef {label}", "skipped (no `top` verb)", "< 0.1 % of a core", None)
            continue
        if "error" in r:
            add(f"cost per client: reef {label}", r["error"], "< 0.1 % of a core", False)
            continue
        add(f"cost per client: reef {label} (x{r['clients']})",
            f"{r['per_client']:.3f} % (±{r['resolution']:.3f})"
            + (f"; schedstat {r['per_client_precise']:.3f} %" if "per_client_precise" in r else ""),
            "< 0.1 % of a core",
            r.get("per_client_precise", r["per_client"]) < 0.1 and r["alive"])
    r = by.get("status-request")
    if r:
        add("one status request (reef CPU, JSON size)", f"{r['cpu_ms']:.2f} ms, {r['bytes'] / 1024:.1f} KiB", "-", None)
    r = by.get("latency")
    if r:
        for key, label in (("events_first", "redraw latency: events --json"),
                           ("watch", "redraw latency: status --watch"),
                           ("top", "redraw latency: top (pty)")):
            if key not in r:
                continue
            s = r[key]
            if s["n"]:
                add(f"{label} (median / max, n={s['n']})", f"{s['median']:.1f} / {s['max']:.1f} ms",
                    "< 100 ms", s["max"] < 100 and r["top_missing" if key == "top" else "missing"] == 0)
            else:
                add(label, "never seen", "< 100 ms", False)
            if key == "events_first" and s["n"]:
                a_, b_ = r["events_reef_side"], r["events_delivery"]
                add("  of which: command -> event time (reef) / event -> client read",
                    f"{a_['median']:.1f} / {b_['median']:.1f} ms median, max {a_['max']:.1f} / {b_['max']:.1f}", "-", None)
    r = by.get("logs-round")
    if r:
        add(f"flood written by {r['gateways']} gateways", f"{r['write_mb_s']:.2f} MB/s",
            f"{r['target_mb']:g} MB/s ±5 % (setup)", r["write_mb_s"] >= 0.95 * r["target_mb"])
        add("reef logs -f delivered (with prefixes)", f"{r['deliver_mb_s']:.2f} MB/s",
            "keeps up with the flood", r["all_ends_seen"] and r["lag_s"] is not None and r["lag_s"] < 1)
        add("reef logs -f lines lost / dup / disorder",
            f"{r['lost']} / {r['duplicates']} / {r['out_of_order']} of {r['lines_expected']}",
            "0 / 0 / 0", r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0)
        add("reef logs -f lag after the flood",
            f"{r['lag_s'] * 1000:.0f} ms" if r["lag_s"] is not None else "END lines missing", "< 1 s",
            r["lag_s"] is not None and r["lag_s"] < 1)
        add(f"reef up CPU during the flood ({r['writes_per_s']:.0f} writes/s)", f"{r['reef_up_cpu_percent']:.1f} % of a core", "-", None)
        add("reef logs -f CPU during the flood", f"{r['logs_f_cpu_percent']:.1f} % of a core", "-", None)
    r = by.get("logs-rotation")
    if r:
        add(f"rotation round: {r['gateways']} gw, {r['write_mb_s']:.1f} MB/s, {len(r['rotated'])} rotated",
            f"lost {r['lost']} of {r['lines_expected']} in {r['gaps']} gaps"
            + (f" ({r['lost'] - r['lost_on_disk']} in NAME.log.1/.2, {r['lost_on_disk']} nowhere)" if r["lost"] else ""),
            "0 lost across rotation", r["lost"] == 0 and r["duplicates"] == 0 and r["out_of_order"] == 0)
    w = [max(len(x[i]) for x in rows + [("metric", "measured", "target", "result")]) for i in range(4)]
    line = lambda x: "  ".join(x[i].ljust(w[i]) for i in range(4)).rstrip()
    print(line(("metric", "measured", "target", "result")))
    print("  ".join("-" * w[i] for i in range(4)))
    for row in rows:
        print(line(row))
    return 1 if any(row[3] == "FAIL" for row in rows) else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("ports-free"); s.add_argument("base", type=int); s.add_argument("step", type=int); s.add_argument("n", type=int)
    s = sub.add_parser("wait-ready"); s.add_argument("reef"); s.add_argument("script"); s.add_argument("n", type=int); s.add_argument("timeout", type=float)
    s = sub.add_parser("cpu")
    for arg in ("--reef", "--script", "--results", "--kinds"):
        s.add_argument(arg, required=True)
    s.add_argument("--pid", type=int, required=True); s.add_argument("--window", type=float, default=30)
    s.add_argument("--settle", type=float, default=3); s.add_argument("--clients", type=int, default=1)
    s.add_argument("--burst", type=int, default=200); s.add_argument("--top-args", default="")
    s = sub.add_parser("latency")
    for arg in ("--reef", "--script", "--results", "--names"):
        s.add_argument(arg, required=True)
    s.add_argument("--changes", type=int, default=10)
    s.add_argument("--top", action="store_true"); s.add_argument("--top-args", default="")
    s = sub.add_parser("flood"); s.add_argument("--ctl", required=True); s.add_argument("--line-bytes", type=int, default=100)
    s = sub.add_parser("logs")
    for arg in ("--reef", "--script", "--results", "--names", "--ctl", "--logs-dir"):
        s.add_argument(arg, required=True)
    s.add_argument("--pid", type=int, required=True); s.add_argument("--round", type=int, required=True)
    s.add_argument("--rate-mb", type=float, required=True); s.add_argument("--secs", type=float, required=True)
    s.add_argument("--only", type=int, default=0); s.add_argument("--line-bytes", type=int, default=100)
    s.add_argument("--tick-ms", type=float, default=10)
    s = sub.add_parser("summary"); s.add_argument("--results", required=True); s.add_argument("--no-top", action="store_true")
    a = p.parse_args()
    fn = globals()["cmd_" + a.cmd.replace("-", "_")]
    try:
        return fn(a)
    finally:
        end_children()


if __name__ == "__main__":
    sys.exit(main())
PYTHON

names_of() { # PREFIX
  local out=() i
  for ((i = 0; i < N; i++)); do out+=("$(printf '%s%03d' "$1" "$i")"); done
  echo "${out[*]}"
}

echo "bench-observe: reef $("$REEF_BIN" --version | awk '{print $2}') at $REEF_BIN; N=$N, ports $BASE + i x $STEP;" \
  "$(nproc) CPUs; temp dir $TMP"

HAS_TOP=0
if "$REEF_BIN" top --help >/dev/null 2>&1; then HAS_TOP=1; fi

if [[ " $PHASES " == *" cpu "* || " $PHASES " == *" latency "* ]]; then
  SCRIPT_A="$TMP/observe.lua"
  write_builtin_topology "$SCRIPT_A"
  say "starting $N built-in gateways"
  start_reef "$SCRIPT_A" builtin
  sleep 2
  if [[ " $PHASES " == *" cpu "* ]]; then
    KINDS="watch events"
    if ((HAS_TOP)); then KINDS="$KINDS top"; else echo "(no \`reef top\` in this binary: skipped)"; fi
    say "1. CPU of reef up (pid $UP_PID, children excluded) over ${WINDOW} s windows, $CLIENTS client(s) of each kind"
    helper cpu --reef "$REEF_BIN" --script "$SCRIPT_A" --results "$RESULTS" --pid "$UP_PID" \
      --window "$WINDOW" --settle "$SETTLE" --clients "$CLIENTS" --kinds "$KINDS" --top-args "$TOP_ARGS"
  fi
  if [[ " $PHASES " == *" latency "* ]]; then
    say "2. redraw latency: $CHANGES x (reef stop NAME, reef start NAME) with reef events --json and reef status --watch$( ((HAS_TOP)) && echo ' and reef top') attached"
    helper latency --reef "$REEF_BIN" --script "$SCRIPT_A" --results "$RESULTS" \
      --names "$(names_of g)" --changes "$CHANGES" --top-args "$TOP_ARGS" $( ((HAS_TOP)) && echo --top)
  fi
  say "stopping the built-in topology"
  stop_reef
fi

if [[ " $PHASES " == *" logs "* ]]; then
  SCRIPT_B="$TMP/flood.lua"
  write_flood_topology "$SCRIPT_B"
  say "starting $N flood gateways (runtime command)"
  start_reef "$SCRIPT_B" flood
  LOGS_DIR=$(dirname "$(ls "$XDG_STATE_HOME"/reef/*/logs/f000.log)")
  say "3. reef logs -f with $N gateways writing $RATE_MB MB/s together for $FLOOD_SECS s"
  helper logs --reef "$REEF_BIN" --script "$SCRIPT_B" --results "$RESULTS" --names "$(names_of f)" \
    --ctl "$TMP/ctl" --logs-dir "$LOGS_DIR" --pid "$UP_PID" --round 1 --rate-mb "$RATE_MB" \
    --secs "$FLOOD_SECS" --line-bytes "$LINE_BYTES" --tick-ms "$TICK_MS"
  if ((ROT_GW > 0)); then
    say "3b. rotation: $ROT_GW gateway(s) at $ROT_RATE_MB MB/s each for $ROT_SECS s (reef rotates a log past 10 MiB)"
    helper logs --reef "$REEF_BIN" --script "$SCRIPT_B" --results "$RESULTS" --names "$(names_of f)" \
      --ctl "$TMP/ctl" --logs-dir "$LOGS_DIR" --pid "$UP_PID" --round 2 \
      --rate-mb "$(awk -v a="$ROT_RATE_MB" -v b="$ROT_GW" 'BEGIN{print a*b}')" --only "$ROT_GW" \
      --secs "$ROT_SECS" --line-bytes 1000 --tick-ms "$TICK_MS"
  fi
  say "stopping the flood topology"
  stop_reef
fi

say "summary (N=$N, WINDOW=${WINDOW}s, CLIENTS=$CLIENTS, RATE_MB=$RATE_MB)"
rc=0
if ((HAS_TOP)); then
  helper summary --results "$RESULTS" || rc=$?
else
  helper summary --results "$RESULTS" --no-top || rc=$?
fi
exit "$rc"
