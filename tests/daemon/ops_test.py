#!/usr/bin/python3
"""ops_test.py: operations checks of a running tesserad (run by test_ops.sh with Debian's
/usr/bin/python3: python3-grpcio and python3-prometheus-client).

  ops_test.py --target HOST:PORT --metrics URL --stubs DIR --pid PID --keys FILE

The daemon runs with --api-keys FILE (key-alpha-0123456789 alpha, key-beta-0123456789 beta)
and --metrics. Checks:
  metrics: /metrics parsed with prometheus_client's parser; counters move by exactly what
           the requests made here did (requests by method and code, prompt and generated
           tokens, TTFT / inter-token histogram counts, step counts); gauges (queue, running
           sequences, KV pages) during a long stream and after; histogram buckets
           cumulative with +Inf == count; 404 and 405 elsewhere.
  reload:  a stream of tenant beta is running; the key file loses beta and gains gamma;
           SIGHUP; the reload counter moves; the stream was still running; gamma works,
           beta is refused, alpha still works; the stream ends normally with every token;
           a broken file is counted as a failed reload and the keys stay.
Prints every failure and "N passed, N failed".
"""
import argparse
import os
import signal
import sys
import time
import urllib.error
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--metrics", required=True)
ap.add_argument("--stubs", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--keys", required=True)
args = ap.parse_args()
sys.path.insert(0, args.stubs)

import grpc  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg  # noqa: E402

passed = failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}", flush=True)


def run(name, fn):
    try:
        fn()
    except Exception as e:  # a crash in a check is a failure, not the end of the run
        check(name, False, f"exception {type(e).__name__}: {e}")


ch = grpc.insecure_channel(args.target)
stub = pbg.InferenceStub(ch)
ALPHA = [("authorization", "Bearer key-alpha-0123456789")]
BETA = [("authorization", "Bearer key-beta-0123456789")]
GAMMA = [("authorization", "Bearer key-gamma-0123456789")]


def scrape():
    """{(sample name, frozenset(labels)): value} and the families, parsed by prometheus_client."""
    with urllib.request.urlopen(args.metrics, timeout=10) as r:
        ctype = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    fams = list(text_string_to_metric_families(text))
    samples = {}
    for f in fams:
        for s in f.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, fams, ctype


def val(samples, name, **labels):
    """Sum of the samples called name whose labels include labels (0 if none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def scrape_until(pred, tries=100):
    """Scrapes until pred(samples) holds (or tries run out): a call is counted when the
    server sees it close, which can come just after the client has its answer."""
    s, _, _ = scrape()
    for _ in range(tries):
        if pred(s):
            break
        time.sleep(0.05)
        s, _, _ = scrape()
    return s


def req_count(samples, method, code):
    return val(samples, "tessera_requests_total", service="tessera.v1.Inference", method=method,
               code=code)


def greedy_req(n, prompt="hello world", **kw):
    return pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
        temperature=0.0, max_tokens=n, ignore_eos=True), **kw)


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def t_metrics():
    s0, fams, ctype = scrape()
    check("content type", ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype)
    names = {s[0] for s in s0}
    for n in ["tessera_queue_depth", "tessera_running_sequences", "tessera_kv_pages_used",
              "tessera_kv_pages_free", "tessera_prompt_tokens_total",
              "tessera_generated_tokens_total", "tessera_generated_tokens_per_second",
              "tessera_time_to_first_token_seconds_count",
              "tessera_inter_token_latency_seconds_bucket", "tessera_device_memory_bytes",
              "tessera_safety_decisions_total", "tessera_config_reloads_total"]:
        check(f"metric {n} exposed", n in names)
    check("every name prefixed tessera_", all(n.startswith("tessera_") for n in names),
          str([n for n in names if not n.startswith("tessera_")]))
    safety = [(dict(ls), v) for (n, ls), v in s0.items() if n == "tessera_safety_decisions_total"]
    check("safety counters registered (3 policies x 3 outcomes, at 0)",
          len(safety) == 9 and all(v == 0 for _, v in safety), str(safety))
    check("device memory of rank 0", val(s0, "tessera_device_memory_bytes", rank="0",
                                          use="weights") > 0)

    N, M, T = 3, 2, 8
    prompt_tokens = 0
    for i in range(N):
        r = stub.Generate(greedy_req(T, prompt=f"hello {i}"), metadata=ALPHA, timeout=60)
        check("unary tokens", r.usage.completion_tokens == T, str(r.usage))
        prompt_tokens += r.usage.prompt_tokens
    for i in range(M):
        evs = list(stub.GenerateStream(greedy_req(T, prompt=f"stream {i}"), metadata=ALPHA,
                                       timeout=60))
        fin = evs[-1].finished
        check("stream tokens", fin.usage.completion_tokens == T, str(fin))
        prompt_tokens += fin.usage.prompt_tokens
    bad = pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(temperature=500.0))
    c = code_of(lambda: stub.Generate(bad, metadata=ALPHA, timeout=10))
    check("invalid -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT, str(c))
    c = code_of(lambda: stub.Generate(greedy_req(2), timeout=10))
    check("no key -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, str(c))
    stub.Tokenize(pb.TokenizeRequest(prompt="hello"), metadata=ALPHA, timeout=10)

    s1 = scrape_until(lambda x: req_count(x, "Tokenize", "OK") - req_count(s0, "Tokenize", "OK") >= 1
                      and req_count(x, "Generate", "OK") - req_count(s0, "Generate", "OK") >= N
                      and req_count(x, "GenerateStream", "OK") -
                      req_count(s0, "GenerateStream", "OK") >= M
                      and req_count(x, "Generate", "INVALID_ARGUMENT") >
                      req_count(s0, "Generate", "INVALID_ARGUMENT")
                      and req_count(x, "Generate", "UNAUTHENTICATED") >
                      req_count(s0, "Generate", "UNAUTHENTICATED"))
    d = lambda name, **l: val(s1, name, **l) - val(s0, name, **l)  # noqa: E731
    check("Generate OK +N", req_count(s1, "Generate", "OK") - req_count(s0, "Generate", "OK") == N)
    check("GenerateStream OK +M", req_count(s1, "GenerateStream", "OK") -
          req_count(s0, "GenerateStream", "OK") == M)
    check("Generate INVALID_ARGUMENT +1", req_count(s1, "Generate", "INVALID_ARGUMENT") -
          req_count(s0, "Generate", "INVALID_ARGUMENT") == 1)
    check("Generate UNAUTHENTICATED +1", req_count(s1, "Generate", "UNAUTHENTICATED") -
          req_count(s0, "Generate", "UNAUTHENTICATED") == 1)
    check("Tokenize OK +1", req_count(s1, "Tokenize", "OK") - req_count(s0, "Tokenize", "OK") == 1)
    check("generated tokens +(N+M)*T", d("tessera_generated_tokens_total") == (N + M) * T,
          str(d("tessera_generated_tokens_total")))
    check("prompt tokens +sum(usage.prompt_tokens)",
          d("tessera_prompt_tokens_total") == prompt_tokens,
          f"{d('tessera_prompt_tokens_total')} != {prompt_tokens}")
    check("TTFT observations +(N+M)", d("tessera_time_to_first_token_seconds_count") == N + M)
    check("TTFT sum grew", d("tessera_time_to_first_token_seconds_sum") > 0)
    check("inter-token observations +(N+M)*(T-1)",
          d("tessera_inter_token_latency_seconds_count") == (N + M) * (T - 1),
          str(d("tessera_inter_token_latency_seconds_count")))
    check("step count grew by at least T", d("tessera_step_duration_seconds_count") >= T)
    check("tokens/s > 0", val(s1, "tessera_generated_tokens_per_second") > 0)
    # the scheduler retires a request (slot, KV pages) just after sending its end: poll
    idle = lambda x: (val(x, "tessera_queue_depth") == 0 and  # noqa: E731
                      val(x, "tessera_running_sequences") == 0 and
                      val(x, "tessera_kv_pages_used") == 0)
    si = s1
    for _ in range(100):
        if idle(si):
            break
        time.sleep(0.05)
        si, _, _ = scrape()
    check("idle: queue 0, running 0, KV used 0", idle(si),
          f"queue {val(si, 'tessera_queue_depth')} running {val(si, 'tessera_running_sequences')}"
          f" kv {val(si, 'tessera_kv_pages_used')}")
    check("KV pages free > 0", val(s1, "tessera_kv_pages_free") > 0)
    # histograms: cumulative buckets, +Inf == count
    for h in ["tessera_time_to_first_token_seconds", "tessera_inter_token_latency_seconds",
              "tessera_step_duration_seconds"]:
        b = sorted(((float(dict(ls)["le"]), v) for (n, ls), v in s1.items()
                    if n == h + "_bucket"), key=lambda x: x[0])
        check(f"{h} buckets cumulative", all(b[i][1] <= b[i + 1][1] for i in range(len(b) - 1)))
        check(f"{h} +Inf == count", b and b[-1][0] == float("inf") and b[-1][1] == val(s1, h + "_count"))

    # a long stream: running 1 and KV pages in use while it runs; cancelled afterwards
    it = stub.GenerateStream(greedy_req(3000, request_id="ops-long"), metadata=ALPHA, timeout=120)
    first = next(it)
    check("long stream started", first.WhichOneof("event") == "started")
    next(it)  # a first delta: it is running
    s2, _, _ = scrape()
    check("running 1 during a stream", val(s2, "tessera_running_sequences") == 1,
          str(val(s2, "tessera_running_sequences")))
    check("KV pages used during a stream", val(s2, "tessera_kv_pages_used") >= 1)
    stub.Cancel(pb.CancelRequest(request_id="ops-long"), metadata=ALPHA, timeout=10)
    evs = list(it)
    check("cancelled stream ends", evs and evs[-1].WhichOneof("event") == "finished" and
          evs[-1].finished.finish_reason == pb.FINISH_REASON_CANCELLED)
    s3 = scrape_until(lambda x: req_count(x, "Cancel", "OK") > req_count(s2, "Cancel", "OK"))
    check("Cancel OK counted", req_count(s3, "Cancel", "OK") - req_count(s2, "Cancel", "OK") == 1)

    # other paths and methods
    base = args.metrics.rsplit("/", 1)[0]
    try:
        urllib.request.urlopen(base + "/nope", timeout=10)
        check("404 elsewhere", False)
    except urllib.error.HTTPError as e:
        check("404 elsewhere", e.code == 404, str(e.code))
    try:
        urllib.request.urlopen(urllib.request.Request(args.metrics, data=b"x", method="POST"),
                               timeout=10)
        check("405 for POST", False)
    except urllib.error.HTTPError as e:
        check("405 for POST", e.code == 405, str(e.code))


def reloads(samples, result):
    return val(samples, "tessera_config_reloads_total", result=result)


def t_reload():
    s0, _, _ = scrape()
    L = 6000  # seconds of generation on the tiny 16K-context model: in flight across the reload
    it = stub.GenerateStream(greedy_req(L, prompt="a long answer"), metadata=BETA, timeout=300)
    ids = []
    fin = None
    ev = next(it)
    check("beta stream started", ev.WhichOneof("event") == "started")
    while not ids:
        ev = next(it)
        if ev.WhichOneof("event") == "delta":
            ids.extend(ev.delta.token_ids)
    with open(args.keys, "w") as f:
        f.write("key-alpha-0123456789 alpha\nkey-gamma-0123456789 gamma\n")
    os.kill(args.pid, signal.SIGHUP)
    s1 = s0
    for _ in range(100):
        s1, _, _ = scrape()
        if reloads(s1, "ok") > reloads(s0, "ok"):
            break
        time.sleep(0.1)
    check("reload counted", reloads(s1, "ok") == reloads(s0, "ok") + 1)
    check("the stream was running across the reload", val(s1, "tessera_running_sequences") >= 1,
          "(the stream ended before the reload: make it longer)")
    check("added key works without restart",
          stub.Generate(greedy_req(2), metadata=GAMMA, timeout=60).usage.completion_tokens == 2)
    check("removed key refused", code_of(lambda: stub.Generate(greedy_req(2), metadata=BETA,
                                                               timeout=10))
          == grpc.StatusCode.UNAUTHENTICATED)
    check("kept key works", code_of(lambda: stub.Tokenize(pb.TokenizeRequest(prompt="x"),
                                                          metadata=ALPHA, timeout=10))
          == grpc.StatusCode.OK)
    s_mid, _, _ = scrape()
    check("the stream still running after the new keys were used",
          val(s_mid, "tessera_running_sequences") >= 1)
    for ev in it:
        if ev.WhichOneof("event") == "delta":
            ids.extend(ev.delta.token_ids)
        elif ev.WhichOneof("event") == "finished":
            fin = ev.finished
    check("in-flight stream survived the reload",
          fin is not None and fin.finish_reason == pb.FINISH_REASON_LENGTH and len(ids) == L and
          fin.usage.completion_tokens == L, f"{len(ids)} ids, {fin}")
    # a broken file: counted as failed, keys kept
    with open(args.keys, "w") as f:
        f.write("broken\n")
    os.kill(args.pid, signal.SIGHUP)
    for _ in range(100):
        s2, _, _ = scrape()
        if reloads(s2, "error") > reloads(s1, "error"):
            break
        time.sleep(0.1)
    check("failed reload counted", reloads(s2, "error") == reloads(s1, "error") + 1)
    check("keys kept after a failed reload", code_of(lambda: stub.Tokenize(
        pb.TokenizeRequest(prompt="x"), metadata=GAMMA, timeout=10)) == grpc.StatusCode.OK)


run("metrics", t_metrics)
run("reload", t_reload)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
