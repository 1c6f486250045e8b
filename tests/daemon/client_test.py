#!/usr/bin/python3
"""client_test.py: checks tesserad through python3-grpcio (Debian's, so run it with
/usr/bin/python3), with stubs generated at test time from proto/tessera/v1/inference.proto
and grpc-proto's health.proto (by test_daemon.sh, into --stubs).

  client_test.py --target HOST:PORT --stubs DIR [--mode main|flood|drain|auth|reload|tls|fair|structured]
                 [--pid PID] [--conc N] [--max-tokens N] [--tls-ca FILE]

Modes added with auth/TLS/reflection/fair share (keys are those of test_daemon.sh's key
file: key-alpha-... tenant alpha, key-beta-... tenant beta, key-gamma-... after reload).

Prints every failure and "N passed, N failed"; exit status 0 only if none failed.
"""
import argparse
import os
import signal
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--target", required=True)
ap.add_argument("--stubs", required=True)
ap.add_argument("--mode", default="main")
ap.add_argument("--pid", type=int, default=0)
ap.add_argument("--conc", type=int, default=32)
ap.add_argument("--max-tokens", type=int, default=12)
ap.add_argument("--tls-ca", default="")
args = ap.parse_args()
sys.path.insert(0, args.stubs)

import grpc  # noqa: E402
from health_v1 import health_pb2, health_pb2_grpc  # noqa: E402
from tessera.v1 import inference_pb2 as pb, inference_pb2_grpc as pbg  # noqa: E402
from refl_v1 import reflection_pb2 as refl1_pb, reflection_pb2_grpc as refl1_grpc  # noqa: E402
from refl_v1alpha import reflection_pb2 as refla_pb, reflection_pb2_grpc as refla_grpc  # noqa: E402
from rpcstatus import status_min_pb2 as status_pb  # noqa: E402

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


if args.tls_ca:
    ch = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(open(args.tls_ca, "rb").read()))
else:
    ch = grpc.insecure_channel(args.target)
stub = pbg.InferenceStub(ch)
health = health_pb2_grpc.HealthStub(ch)
MT = args.max_tokens


def greedy(max_tokens=MT, **kw):
    return pb.SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def stream_all(req, timeout=120):
    evs = list(stub.GenerateStream(req, timeout=timeout))
    text = "".join(e.delta.text for e in evs if e.WhichOneof("event") == "delta")
    ids = [i for e in evs if e.WhichOneof("event") == "delta" for i in e.delta.token_ids]
    return evs, text, ids


def code_of(fn):
    try:
        fn()
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as e:
        return e.code(), e.details()


def kv_back(timeout=10.0):
    """Waits until no request is active and every KV page is free again."""
    end = time.time() + timeout
    ci = None
    while time.time() < end:
        ci = stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=5)
        if ci.kv_pages_used == 0 and ci.active_requests == 0 and ci.queued_requests == 0:
            return True, ci
        time.sleep(0.05)
    return False, ci


def t_health():
    r = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    check("health ''", r.status == health_pb2.HealthCheckResponse.SERVING, str(r))
    r = health.Check(health_pb2.HealthCheckRequest(service="tessera.v1.Inference"), timeout=5)
    check("health service", r.status == health_pb2.HealthCheckResponse.SERVING, str(r))
    c, _ = code_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5))
    check("health unknown -> NOT_FOUND", c == grpc.StatusCode.NOT_FOUND, str(c))
    w = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    first = next(w)
    check("health Watch first", first.status == health_pb2.HealthCheckResponse.SERVING, str(first))
    w.cancel()


def t_info():
    mi = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    check("model info", mi.context_length > 0 and mi.vocab_size > 0 and mi.ready and mi.name, str(mi))
    lm = stub.ListModels(pb.ListModelsRequest(), timeout=5)
    check("list models", len(lm.models) == 1 and lm.models[0].name == mi.name, str(lm))
    ci = stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=5)
    ranks = int(os.environ.get("TESSERA_DAEMON_RANKS", "1"))  # test_daemon.sh: mpirun -np N --pp N
    plan_ok = (ci.plan.startswith("1 rank") if ranks == 1
               else f"{ranks} ranks = tp 1 x pp {ranks}" in ci.plan)
    check("cluster info", plan_ok and ci.slots > 0 and ci.kv_pages_total > 0
          and ci.version and ci.pipeline_parallel == ranks and ci.tensor_parallel == 1, str(ci))
    c, d = code_of(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(model="no-such"), timeout=5))
    check("unknown model -> NOT_FOUND", c == grpc.StatusCode.NOT_FOUND, f"{c} {d}")


def t_generate():
    prompt = "The capital of France is"
    r = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=greedy(), return_token_ids=True),
                      timeout=120)
    check("unary", r.finish_reason in (pb.FINISH_REASON_LENGTH, pb.FINISH_REASON_STOP)
          and r.usage.completion_tokens == len(r.token_ids) and r.usage.prompt_tokens > 0
          and r.request_id, str(r))
    r2 = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=greedy(), return_token_ids=True),
                       timeout=120)
    check("unary greedy deterministic", (r.text, list(r.token_ids)) == (r2.text, list(r2.token_ids)))
    evs, text, ids = stream_all(pb.GenerateRequest(prompt=prompt, sampling=greedy(),
                                                   request_id="my-id-1"))
    kinds = [e.WhichOneof("event") for e in evs]
    check("stream shape", kinds[0] == "started" and kinds[-1] == "finished"
          and all(k == "delta" for k in kinds[1:-1]), str(kinds))
    check("stream request_id echoed", evs[0].started.request_id == "my-id-1", str(evs[0]))
    check("stream == unary", (text, ids) == (r.text, list(r.token_ids)),
          f"{text!r} {ids} vs {r.text!r} {list(r.token_ids)}")
    fin = evs[-1].finished
    check("stream finished usage", fin.usage.completion_tokens == len(ids)
          and fin.finish_reason == r.finish_reason, str(fin))
    # seeds: unset -> random and echoed; the echoed seed reproduces the output
    s1 = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
        temperature=0.9, max_tokens=MT)), timeout=120)
    s2 = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
        temperature=0.9, max_tokens=MT, seed=s1.seed)), timeout=120)
    check("seed echoed and reproducible", s1.text == s2.text and s2.seed == s1.seed,
          f"{s1.seed} {s1.text!r} {s2.text!r}")
    # token-id input == text input
    tk = stub.Tokenize(pb.TokenizeRequest(prompt=prompt, add_special_tokens=True), timeout=10)
    check("tokenize", tk.count == len(tk.ids) > 0 and len(tk.pieces) == len(tk.ids), str(tk))
    rt = stub.Generate(pb.GenerateRequest(tokens=pb.TokenIds(ids=tk.ids), sampling=greedy(),
                                          return_token_ids=True), timeout=120)
    check("token-id input", (rt.text, list(rt.token_ids)) == (r.text, list(r.token_ids)),
          f"{rt.text!r} vs {r.text!r}")
    dt = stub.Detokenize(pb.DetokenizeRequest(ids=tk.ids[1:]), timeout=10)
    check("detokenize", dt.text == prompt, repr(dt.text))
    # chat
    chat = pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Hi!")])],
                   add_generation_prompt=True)
    evs, ctext, cids = stream_all(pb.GenerateRequest(chat=chat, sampling=greedy()))
    check("chat stream", evs[-1].WhichOneof("event") == "finished"
          and evs[0].started.prompt_tokens > 5, str(evs[0]))
    rc = stub.Generate(pb.GenerateRequest(chat=chat, sampling=greedy()), timeout=120)
    check("chat unary == stream", rc.text == ctext, f"{rc.text!r} vs {ctext!r}")
    img = pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=[
        pb.ContentPart(text="what is this?"), pb.ContentPart(image=pb.Image(data=b"\x89PNG"))])])
    c, d = code_of(lambda: stub.Generate(pb.GenerateRequest(chat=img), timeout=10))
    check("image -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT and "vision" in d, f"{c} {d}")
    # stop strings: cut, not included; stop token ids
    if len(r.text) > 4:
        stop = r.text[2:4]
        rs = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=greedy(stop=[stop])), timeout=120)
        check("stop string", rs.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE
              and stop not in rs.text and r.text.startswith(rs.text), f"{stop!r} {rs.text!r}")
    if len(r.token_ids) > 3:
        sid = r.token_ids[2]
        rs = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=greedy(stop_token_ids=[sid]),
                                              return_token_ids=True), timeout=120)
        check("stop token id", rs.finish_reason == pb.FINISH_REASON_STOP_SEQUENCE
              and sid not in rs.token_ids, str(rs.token_ids))
    # max_tokens 0 = the server default (bounded by the context)
    r0 = stub.Generate(pb.GenerateRequest(prompt=prompt, sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=0)), timeout=300)
    mi = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    check("max_tokens 0 -> default", 0 < r0.usage.completion_tokens <= mi.context_length,
          str(r0.usage))


def t_invalid():
    cases = [
        ("empty prompt", pb.GenerateRequest(prompt=""), "prompt"),
        ("no input", pb.GenerateRequest(), "input"),
        ("bad temperature", pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(temperature=500)),
         "temperature"),
        ("bad top_p", pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(top_p=1.5)), "top_p"),
        ("huge max_tokens", pb.GenerateRequest(prompt="x", sampling=pb.SamplingParams(max_tokens=10**9)),
         "max_tokens"),
        ("bad token id", pb.GenerateRequest(tokens=pb.TokenIds(ids=[2, 10**8])), "tokens.ids"),
        ("long request_id", pb.GenerateRequest(prompt="x", request_id="r" * 200), "request_id"),
    ]
    for name, req, field in cases:
        for meth in (stub.Generate, lambda q, timeout: list(stub.GenerateStream(q, timeout=timeout))):
            c, d = code_of(lambda: meth(req, timeout=10))
            check(f"{name} -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT and field in d,
                  f"{c} {d!r}")
    c, d = code_of(lambda: stub.Generate(pb.GenerateRequest(prompt="x " * 5000, sampling=greedy()),
                                         timeout=10))
    check("prompt over context -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT
          and "exceeds the context" in d, f"{c} {d}")
    raw = ch.unary_unary("/tessera.v1.Inference/Generate")  # bytes in, bytes out
    c, d = code_of(lambda: raw(b"\xff\xff\xff\xff garbage", timeout=10))
    check("malformed bytes -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT, f"{c} {d}")
    rawt = ch.unary_unary("/tessera.v1.Inference/Tokenize")
    c, d = code_of(lambda: rawt(b"\x0a\xff", timeout=10))
    check("malformed Tokenize -> INVALID_ARGUMENT", c == grpc.StatusCode.INVALID_ARGUMENT, f"{c} {d}")
    unk = ch.unary_unary("/tessera.v1.Inference/NoSuchMethod")
    c, d = code_of(lambda: unk(b"", timeout=10))
    check("unknown method -> UNIMPLEMENTED", c == grpc.StatusCode.UNIMPLEMENTED, f"{c} {d}")
    unk = ch.unary_unary("/other.Svc/X")
    c, d = code_of(lambda: unk(b"", timeout=10))
    check("unknown service -> UNIMPLEMENTED", c == grpc.StatusCode.UNIMPLEMENTED, f"{c} {d}")


def t_concurrent():
    prompts = ["The capital of France is", "Once upon a time", "1, 2, 3, 4,", "Hello, my name is"]
    solo = {}
    for p in prompts:
        r = stub.Generate(pb.GenerateRequest(prompt=p, sampling=greedy(), return_token_ids=True),
                          timeout=300)
        solo[p] = list(r.token_ids)
    results = [None] * args.conc
    errors = []

    def worker(i):
        p = prompts[i % len(prompts)]
        try:
            _, _, ids = stream_all(pb.GenerateRequest(prompt=p, sampling=greedy()), timeout=600)
            results[i] = ids
        except grpc.RpcError as e:
            errors.append(f"{i}: {e.code()} {e.details()}")

    th = [threading.Thread(target=worker, args=(i,)) for i in range(args.conc)]
    t0 = time.time()
    for t in th:
        t.start()
    for t in th:
        t.join()
    dt = time.time() - t0
    check(f"{args.conc} concurrent streams: no errors", not errors, str(errors[:3]))
    diff = [i for i in range(args.conc) if results[i] is not None
            and results[i] != solo[prompts[i % len(prompts)]]]
    check(f"{args.conc} concurrent greedy streams == alone", not diff,
          f"{len(diff)} differ, e.g. #{diff[0] if diff else ''}: "
          f"{results[diff[0]] if diff else ''} vs {solo[prompts[diff[0] % len(prompts)]] if diff else ''}")
    print(f"info: {args.conc} concurrent streams of {MT} tokens took {dt:.2f} s", flush=True)
    ok, ci = kv_back()
    check("KV free after concurrency", ok, str(ci))


def t_cancel():
    req = pb.GenerateRequest(prompt="Once upon a time", sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=0))
    it = stub.GenerateStream(req, timeout=60)
    n = 0
    for ev in it:
        if ev.WhichOneof("event") == "delta":
            n += 1
            if n == 2:
                it.cancel()
                break
    c, _ = code_of(lambda: list(it))
    check("client cancel -> CANCELLED", c == grpc.StatusCode.CANCELLED, str(c))
    ok, ci = kv_back()
    check("KV pages back after cancel", ok, str(ci))
    # a short deadline (in the queue or while generating): 400 tokens, which even the tiny
    # model with a prefix-cache hit cannot produce within it
    req = pb.GenerateRequest(prompt="Once upon a time", sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=400))
    c, d = code_of(lambda: list(stub.GenerateStream(req, timeout=0.02)))
    check("deadline -> DEADLINE_EXCEEDED", c == grpc.StatusCode.DEADLINE_EXCEEDED, f"{c} {d}")
    c, d = code_of(lambda: stub.Generate(req, timeout=0.02))
    check("unary deadline -> DEADLINE_EXCEEDED", c == grpc.StatusCode.DEADLINE_EXCEEDED, f"{c} {d}")
    ok, ci = kv_back()
    check("KV pages back after deadline", ok, str(ci))
    # Cancel(request_id) from another RPC ends the stream with FINISH_REASON_CANCELLED
    req2 = pb.GenerateRequest(prompt="Once upon a time", request_id="cancel-me",
                              sampling=pb.SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=0))
    it = stub.GenerateStream(req2, timeout=60)
    last = None
    for ev in it:
        if ev.WhichOneof("event") == "delta" and last is None:
            cr = stub.Cancel(pb.CancelRequest(request_id="cancel-me"), timeout=5)
            check("Cancel found", cr.found, str(cr))
            last = "sent"
        if ev.WhichOneof("event") == "finished":
            last = ev.finished.finish_reason
    check("Cancel -> FINISH_REASON_CANCELLED", last == pb.FINISH_REASON_CANCELLED, str(last))
    cr = stub.Cancel(pb.CancelRequest(request_id="nope"), timeout=5)
    check("Cancel unknown id", not cr.found, str(cr))
    ok, ci = kv_back()
    check("KV pages back after Cancel", ok, str(ci))


def t_still_serving():
    r = stub.Generate(pb.GenerateRequest(prompt="still there?", sampling=greedy(4)), timeout=60)
    check("still serving", r.usage.completion_tokens > 0 or r.finish_reason == pb.FINISH_REASON_STOP,
          str(r))
    ci = stub.GetClusterInfo(pb.GetClusterInfoRequest(), timeout=5)
    check("counters", ci.requests_completed > 0 and ci.requests_cancelled >= 3, str(ci))


def t_flood():
    """--slots 1 --queue 1: a burst gets RESOURCE_EXHAUSTED with a retry hint."""
    codes, pushback, retry, lock = [], [], [], threading.Lock()
    req = pb.GenerateRequest(prompt="flood", sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=64))

    def worker():
        try:
            list(stub.GenerateStream(req, timeout=120))
            c = grpc.StatusCode.OK
        except grpc.RpcError as e:
            c = e.code()
            md = dict(e.trailing_metadata() or ())
            if "grpc-retry-pushback-ms" in md:
                with lock:
                    pushback.append(md["grpc-retry-pushback-ms"])
            st = status_details(e)
            if st is not None:
                for any_ in st.details:
                    if any_.type_url.endswith("/google.rpc.RetryInfo"):
                        ri = status_pb.RetryInfo()
                        ri.ParseFromString(any_.value)
                        with lock:
                            retry.append((st.code, ri.retry_delay.seconds * 1000
                                          + ri.retry_delay.nanos // 1000000))
        with lock:
            codes.append(c)

    th = [threading.Thread(target=worker) for _ in range(8)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    ex = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    check("queue full -> RESOURCE_EXHAUSTED", ex >= 1 and codes.count(grpc.StatusCode.OK) >= 1
          and ex + codes.count(grpc.StatusCode.OK) == len(codes),
          str(codes))
    check("retry pushback metadata", len(pushback) == ex and all(p.isdigit() for p in pushback),
          str(pushback))
    # rich error: google.rpc.Status + RetryInfo in grpc-status-details-bin
    check("RESOURCE_EXHAUSTED carries RetryInfo", len(retry) == ex and
          all(code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0] and d > 0 for code, d in retry),
          str(retry))
    ok, ci = kv_back()
    check("KV free after flood", ok and ci.requests_rejected >= 1, str(ci))
    t_still_serving_simple()


def status_details(e):
    """google.rpc.Status from grpc-status-details-bin, or None."""
    for k, v in (e.trailing_metadata() or ()):
        if k == "grpc-status-details-bin":
            st = status_pb.Status()
            st.ParseFromString(v)
            return st
    return None


def bad_request_fields(e):
    st = status_details(e)
    out = []
    if st is None:
        return None, out
    for any_ in st.details:
        if any_.type_url.endswith("/google.rpc.BadRequest"):
            br = status_pb.BadRequest()
            br.ParseFromString(any_.value)
            out += [(fv.field, fv.description) for fv in br.field_violations]
    return st, out


def rpc_error(fn):
    try:
        fn()
    except grpc.RpcError as e:
        return e
    return None


KEY_A = [("authorization", "Bearer key-alpha-0123456789")]
KEY_B = [("authorization", "Bearer key-beta-0123456789")]
KEY_G = [("authorization", "Bearer key-gamma-0123456789")]


def t_auth():
    """--api-keys: Inference needs a key; health and reflection do not."""
    req = pb.GenerateRequest(prompt="hello", sampling=greedy(4))
    c, d = code_of(lambda: stub.Generate(req, timeout=30))
    check("no key -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    c, d = code_of(lambda: list(stub.GenerateStream(req, timeout=30)))
    check("stream no key -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    c, d = code_of(lambda: stub.Generate(req, timeout=30, metadata=[("authorization", "Bearer nope-nope-nope")]))
    check("wrong key -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    c, d = code_of(lambda: stub.Generate(req, timeout=30, metadata=[("authorization", "key-alpha-0123456789")]))
    check("key without Bearer -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    c, d = code_of(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10))
    check("GetModelInfo no key -> UNAUTHENTICATED", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    r = stub.Generate(req, timeout=60, metadata=KEY_A)
    check("key alpha works", r.usage.prompt_tokens > 0, str(r))
    r = stub.Generate(req, timeout=60, metadata=KEY_B)
    check("key beta works", r.usage.prompt_tokens > 0, str(r))
    h = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    check("health needs no key", h.status == health_pb2.HealthCheckResponse.SERVING, str(h))
    # rich errors: INVALID_ARGUMENT with BadRequest field violations
    e = rpc_error(lambda: stub.Generate(pb.GenerateRequest(prompt=""), timeout=10, metadata=KEY_A))
    st, fv = bad_request_fields(e) if e else (None, [])
    check("INVALID_ARGUMENT carries BadRequest(prompt)", e is not None and st is not None
          and st.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and fv and fv[0][0] == "prompt",
          f"{st} {fv}")
    e = rpc_error(lambda: stub.Generate(pb.GenerateRequest(
        prompt="x", sampling=pb.SamplingParams(temperature=500)), timeout=10, metadata=KEY_A))
    st, fv = bad_request_fields(e) if e else (None, [])
    check("BadRequest field sampling.temperature", fv and fv[0][0] == "sampling.temperature"
          and "500" in fv[0][1], str(fv))
    e = rpc_error(lambda: list(stub.GenerateStream(pb.GenerateRequest(
        tokens=pb.TokenIds(ids=[2, 10**8])), timeout=10, metadata=KEY_A)))
    st, fv = bad_request_fields(e) if e else (None, [])
    check("stream BadRequest field tokens.ids[1]", fv and fv[0][0] == "tokens.ids[1]", str(fv))
    t_reflection()


def refl_call(mod, req):
    stubr = mod[1].ServerReflectionStub(ch)
    return list(stubr.ServerReflectionInfo(iter([req]), timeout=10))


def t_reflection():
    from google.protobuf import descriptor_pb2
    for name, mod in (("v1", (refl1_pb, refl1_grpc)), ("v1alpha", (refla_pb, refla_grpc))):
        rs = refl_call(mod, mod[0].ServerReflectionRequest(list_services=""))
        svcs = sorted(s.name for s in rs[0].list_services_response.service)
        check(f"reflection {name} list services", "tessera.v1.Inference" in svcs
              and "grpc.health.v1.Health" in svcs and "grpc.reflection.v1.ServerReflection" in svcs
              and "grpc.reflection.v1alpha.ServerReflection" in svcs, str(svcs))
        rs = refl_call(mod, mod[0].ServerReflectionRequest(file_containing_symbol="tessera.v1.Inference"))
        fds = [descriptor_pb2.FileDescriptorProto.FromString(b)
               for b in rs[0].file_descriptor_response.file_descriptor_proto]
        main = [f for f in fds if f.name == "tessera/v1/inference.proto"]
        check(f"reflection {name} file containing tessera.v1.Inference", main and
              any(sv.name == "Inference" and any(m.name == "GenerateStream" for m in sv.method)
                  for sv in main[0].service), str([f.name for f in fds]))
        rs = refl_call(mod, mod[0].ServerReflectionRequest(
            file_containing_symbol="tessera.v1.GenerateRequest"))
        check(f"reflection {name} message symbol", len(rs[0].file_descriptor_response.file_descriptor_proto) >= 1,
              str(rs[0]))
        rs = refl_call(mod, mod[0].ServerReflectionRequest(file_containing_symbol="no.such.Thing"))
        check(f"reflection {name} unknown symbol -> NOT_FOUND",
              rs[0].WhichOneof("message_response") == "error_response"
              and rs[0].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], str(rs[0]))
    # several requests on one stream (what grpcurl does)
    stubr = refl1_grpc.ServerReflectionStub(ch)
    reqs = [refl1_pb.ServerReflectionRequest(list_services=""),
            refl1_pb.ServerReflectionRequest(file_by_filename="grpc/health/v1/health.proto")]
    rs = list(stubr.ServerReflectionInfo(iter(reqs), timeout=10))
    check("reflection: 2 requests on one stream", len(rs) == 2
          and rs[1].file_descriptor_response.file_descriptor_proto, str(rs))


def t_reload():
    """After the key file changed and SIGHUP: gamma added, beta removed, alpha kept."""
    req = pb.GenerateRequest(prompt="hello", sampling=greedy(4))
    r = stub.Generate(req, timeout=60, metadata=KEY_G)
    check("added key works after SIGHUP", r.usage.prompt_tokens > 0, str(r))
    c, d = code_of(lambda: stub.Generate(req, timeout=30, metadata=KEY_B))
    check("removed key refused after SIGHUP", c == grpc.StatusCode.UNAUTHENTICATED, f"{c} {d}")
    r = stub.Generate(req, timeout=60, metadata=KEY_A)
    check("kept key still works", r.usage.prompt_tokens > 0, str(r))


def t_tls():
    """TLS: this channel (--tls-ca) works; a plaintext one gets UNAVAILABLE."""
    r = stub.Generate(pb.GenerateRequest(prompt="hello", sampling=greedy(4)), timeout=60)
    check("TLS Generate", r.usage.prompt_tokens > 0, str(r))
    evs, _, _ = stream_all(pb.GenerateRequest(prompt="hello", sampling=greedy(4)))
    check("TLS stream", evs[-1].WhichOneof("event") == "finished", str(evs[-1]))
    plain = pbg.InferenceStub(grpc.insecure_channel(args.target))
    c, d = code_of(lambda: plain.Generate(pb.GenerateRequest(prompt="hello"), timeout=10))
    check("plaintext client on TLS port -> UNAVAILABLE", c == grpc.StatusCode.UNAVAILABLE, f"{c} {d}")


def t_fair():
    """--slots 1: tenant alpha queues 8 long requests, then beta 1 short one; beta is admitted
    right after the running alpha request, not after alpha's whole queue."""
    order, lock = [], threading.Lock()
    started = threading.Semaphore(0)
    long_req = pb.GenerateRequest(prompt="flood", sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=160))

    def worker(tag, req, md):
        try:
            for ev in stub.GenerateStream(req, timeout=300, metadata=md):
                if ev.WhichOneof("event") == "started":
                    started.release()
            with lock:
                order.append(tag)
        except grpc.RpcError as e:
            with lock:
                order.append(f"{tag}:{e.code()}")
            started.release()

    th = [threading.Thread(target=worker, args=(f"A{i}", long_req, KEY_A)) for i in range(8)]
    for t in th:
        t.start()
    for _ in range(8):
        started.acquire(timeout=60)
    tb = threading.Thread(target=worker, args=("B", pb.GenerateRequest(
        prompt="short", sampling=pb.SamplingParams(temperature=0.0, ignore_eos=True, max_tokens=4)), KEY_B))
    tb.start()
    th.append(tb)
    for t in th:
        t.join()
    check("fair share: all done", len(order) == 9 and all(":" not in o for o in order), str(order))
    check("fair share: tenant B not starved (done 2nd or 3rd)", "B" in order and order.index("B") <= 2,
          str(order))
    print(f"info: fair-share completion order {order}", flush=True)


def t_still_serving_simple():
    r = stub.Generate(pb.GenerateRequest(prompt="still there?", sampling=greedy(4)), timeout=60)
    check("still serving", r.usage.prompt_tokens > 0, str(r))


def t_drain():
    """SIGTERM while a stream runs: it finishes within the grace period."""
    req = pb.GenerateRequest(prompt="drain", sampling=pb.SamplingParams(
        temperature=0.0, ignore_eos=True, max_tokens=48))
    it = stub.GenerateStream(req, timeout=120)
    last, n = None, 0
    for ev in it:
        k = ev.WhichOneof("event")
        if k == "delta":
            n += 1
            if n == 1:
                os.kill(args.pid, signal.SIGTERM)
        last = ev
    check("stream finishes during drain", last is not None and last.WhichOneof("event") == "finished"
          and last.finished.usage.completion_tokens == 48, str(last))
    c, d = code_of(lambda: stub.Generate(pb.GenerateRequest(prompt="late"), timeout=5))
    check("new request after drain -> UNAVAILABLE", c == grpc.StatusCode.UNAVAILABLE, f"{c} {d}")



# ---- structured output and function calling (--mode structured) ----

SCHEMAS = [
    {"type": "object", "properties": {"name": {"type": "string", "maxLength": 24},
                                      "age": {"type": "integer"},
                                      "city": {"enum": ["Paris", "London", "Tokyo"]}},
     "required": ["name", "age", "city"], "additionalProperties": False},
    {"type": "array", "items": {"type": "object", "properties": {
        "item": {"type": "string", "minLength": 1, "maxLength": 16}, "qty": {"type": "number"}},
        "required": ["item", "qty"], "additionalProperties": False}, "minItems": 1, "maxItems": 3},
    {"$defs": {"pt": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                      "required": ["x", "y"], "additionalProperties": False}},
     "type": "object", "properties": {"from": {"$ref": "#/$defs/pt"}, "to": {"$ref": "#/$defs/pt"},
                                      "label": {"type": ["string", "null"], "maxLength": 12}},
     "required": ["from", "to", "label"], "additionalProperties": False},
    {"anyOf": [{"type": "boolean"}, {"type": "object", "properties": {"ok": {"const": True}},
                                     "required": ["ok"], "additionalProperties": False}]},
]
PROMPTS = ["Describe a person as JSON.", "Write a shopping list as JSON.",
           "Give two points as JSON.", "Answer yes or no in JSON: is water wet?"]


def user_chat(text, **kw):
    return pb.Chat(messages=[pb.ChatMessage(role=pb.ROLE_USER, parts=[pb.ContentPart(text=text)])], **kw)


def t_structured():
    import json
    import jsonschema
    solo = {}
    for i, sc in enumerate(SCHEMAS):
        con = pb.OutputConstraint(json_schema=json.dumps(sc))
        for temp, seed in ((0.0, 0), (1.0, 11)):
            sp = pb.SamplingParams(temperature=temp, seed=seed, max_tokens=300)
            req = pb.GenerateRequest(chat=user_chat(PROMPTS[i]), sampling=sp, constraint=con,
                                     return_token_ids=True)
            r = stub.Generate(req, timeout=300)
            try:
                val = json.loads(r.text)
                jsonschema.validate(val, sc)
                good = True
            except Exception as e:  # noqa: BLE001
                good, val = False, e
            check(f"schema {i} temp {temp}: output is valid JSON for the schema",
                  good and r.finish_reason == pb.FINISH_REASON_STOP,
                  f"{r.text!r} {r.finish_reason} {val}")
            if temp == 0.0:
                solo[i] = (r.text, list(r.token_ids))
                evs, text, ids = stream_all(req)
                check(f"schema {i}: stream == unary", (text, ids) == solo[i]
                      and evs[-1].finished.finish_reason == pb.FINISH_REASON_STOP, f"{text!r}")
        print(f"info: schema {i}: {solo[i][0]!r}", flush=True)
    # json_object and choice
    r = stub.Generate(pb.GenerateRequest(chat=user_chat("Say something as JSON."),
                                         sampling=pb.SamplingParams(temperature=1.0, seed=5, max_tokens=400),
                                         constraint=pb.OutputConstraint(json_object=True)), timeout=300)
    ok = r.finish_reason == pb.FINISH_REASON_STOP
    try:
        ok = ok and isinstance(json.loads(r.text), dict)
    except ValueError:
        ok = False
    check("json_object: a JSON object", ok or r.finish_reason == pb.FINISH_REASON_LENGTH, repr(r.text))
    opts = ["red", "green", "blue"]
    r = stub.Generate(pb.GenerateRequest(chat=user_chat("Pick a colour."), sampling=pb.SamplingParams(
        temperature=1.0, seed=3, max_tokens=20), constraint=pb.OutputConstraint(
            choice=pb.OutputConstraint.Choice(options=opts))), timeout=120)
    check("choice: one of the options", r.text in opts and r.finish_reason == pb.FINISH_REASON_STOP,
          repr(r.text))
    # bad schemas: INVALID_ARGUMENT naming the keyword, with the BadRequest field; still serving
    for bad, kw in (('{"type":"string","pattern":"^a"}', "pattern"), ('{"type": ', "JSON"),
                    ('{"$ref":"#/$defs/nope"}', "$ref"), ('{"type":"integer","minimum":1}', "minimum")):
        e = rpc_error(lambda: stub.Generate(pb.GenerateRequest(
            prompt="x", constraint=pb.OutputConstraint(json_schema=bad)), timeout=10))
        st, fv = bad_request_fields(e) if e else (None, [])
        check(f"bad schema {bad!r} -> INVALID_ARGUMENT naming {kw}",
              e is not None and e.code() == grpc.StatusCode.INVALID_ARGUMENT and kw in e.details()
              and fv and fv[0][0] == "constraint.json_schema", f"{e and e.details()} {fv}")
    c, d = code_of(lambda: stub.Generate(pb.GenerateRequest(
        prompt="x", constraint=pb.OutputConstraint(regex="a+")), timeout=10))
    check("regex -> UNIMPLEMENTED", c == grpc.StatusCode.UNIMPLEMENTED, f"{c} {d}")
    t_still_serving_simple()
    # batch invariance: constrained and unconstrained greedy requests at once == alone
    plain = {}
    for p in ("The capital of France is", "Once upon a time"):
        r = stub.Generate(pb.GenerateRequest(prompt=p, sampling=greedy(), return_token_ids=True), timeout=300)
        plain[p] = list(r.token_ids)
    jobs = [("s", i) for i in range(len(SCHEMAS))] + [("p", p) for p in plain] * 2
    res, errs = {}, []

    def worker(j):
        kind, key = j
        try:
            if kind == "s":
                r = stub.Generate(pb.GenerateRequest(
                    chat=user_chat(PROMPTS[key]), sampling=pb.SamplingParams(temperature=0.0, max_tokens=300),
                    constraint=pb.OutputConstraint(json_schema=json.dumps(SCHEMAS[key])),
                    return_token_ids=True), timeout=600)
                res[j] = (r.text, list(r.token_ids)) == solo[key]
            else:
                r = stub.Generate(pb.GenerateRequest(prompt=key, sampling=greedy(), return_token_ids=True),
                                  timeout=600)
                res[j] = list(r.token_ids) == plain[key]
        except grpc.RpcError as e:
            errs.append(f"{j}: {e.code()} {e.details()}")

    th = [threading.Thread(target=worker, args=(j,)) for j in jobs]
    for t in th:
        t.start()
    for t in th:
        t.join()
    check("constrained + unconstrained batched == alone", not errs and all(res.get(j) for j in jobs),
          f"{errs} {res}")
    if stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).context_length >= 1024:
        t_tools()  # the declarations take ~800 tokens with a small vocabulary
    else:
        print("info: context under 1024 tokens: function calling checks skipped", flush=True)


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                            "unit": {"enum": ["celsius", "fahrenheit"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}},
        "required": ["timezone"], "additionalProperties": False}


def t_tools():
    import json
    import jsonschema
    tools = [pb.Tool(name="get_weather", description="Current weather of a city",
                     parameters_json_schema=json.dumps(WEATHER)),
             pb.Tool(name="get_time", description="Current time in a timezone",
                     parameters_json_schema=json.dumps(TIME))]
    schemas = {"get_weather": WEATHER, "get_time": TIME}
    for mode, name, want in ((pb.ToolChoice.MODE_REQUIRED, "", None),
                             (pb.ToolChoice.MODE_NAMED, "get_time", "get_time"),
                             (pb.ToolChoice.MODE_NAMED, "get_weather", "get_weather")):
        chat = user_chat("What is the weather in Paris right now?", tools=tools,
                         tool_choice=pb.ToolChoice(mode=mode, name=name))
        for temp, seed in ((0.0, 0), (1.0, 7)):
            req = pb.GenerateRequest(chat=chat, sampling=pb.SamplingParams(temperature=temp, seed=seed,
                                                                           max_tokens=300))
            r = stub.Generate(req, timeout=300)
            ok = r.finish_reason == pb.FINISH_REASON_TOOL_CALLS and len(r.tool_calls) == 1
            detail = f"{r.text!r} {r.finish_reason} {list(r.tool_calls)}"
            if ok:
                tc = r.tool_calls[0]
                try:
                    jsonschema.validate(json.loads(tc.arguments_json), schemas[tc.name])
                    ok = tc.id == "call-1" and (want is None or tc.name == want)
                except Exception as e:  # noqa: BLE001
                    ok, detail = False, f"{detail} {e}"
            check(f"tool_choice {mode} {name} temp {temp}: a valid structured call", ok, detail)
            if ok and temp == 0.0:
                print(f"info: tool call {r.tool_calls[0].name} {r.tool_calls[0].arguments_json}", flush=True)
                evs, text, _ = stream_all(req)
                fin = evs[-1].finished
                check("tool call in the stream's Finished", fin.finish_reason == pb.FINISH_REASON_TOOL_CALLS
                      and list(fin.tool_calls) == list(r.tool_calls) and text == r.text, str(fin))
    # the prompt: declarations in the first user turn; a call and a tool result in the history
    hist = pb.Chat(messages=[
        pb.ChatMessage(role=pb.ROLE_USER, parts=[pb.ContentPart(text="Weather in Paris?")]),
        pb.ChatMessage(role=pb.ROLE_MODEL, tool_calls=[pb.ToolCall(
            name="get_weather", arguments_json='{"city":"Paris","unit":"celsius"}')]),
        pb.ChatMessage(role=pb.ROLE_TOOL, name="get_weather", parts=[pb.ContentPart(text='{"temp": 21}')]),
    ], tools=tools)
    tk = stub.Tokenize(pb.TokenizeRequest(chat=hist), timeout=10)
    text = b"".join(tk.pieces).decode()
    exp = ("<start_of_turn>user\nYou have access to functions. If you decide to invoke any of the "
           "function(s),\nyou MUST put it in the format of\n{\"name\": function name, \"parameters\": "
           "dictionary of argument name and its value}\n\nYou SHOULD NOT include any other text in the "
           "response if you call a function\n[\n  {\n    \"name\": \"get_weather\",")
    check("tools rendered into the first user turn", exp in text, text[:400])
    check("tool call and result rendered", '<start_of_turn>model\n{"name": "get_weather", "parameters": '
          '{"city": "Paris", "unit": "celsius"}}<end_of_turn>\n<start_of_turn>user\n```tool_output\n'
          '{"temp": 21}\n```<end_of_turn>\n<start_of_turn>model\n' in text, text[-300:])
    r = stub.Generate(pb.GenerateRequest(chat=hist, sampling=greedy(16)), timeout=120)
    check("generate after a tool result", r.usage.prompt_tokens > 50, str(r.usage))
    # bad tool declarations
    for tl, tc, field in (
            ([pb.Tool(name="bad name", parameters_json_schema="{}")], None, "chat.tools[0].name"),
            ([pb.Tool(name="f", parameters_json_schema='{"type":"object","properties":{"a":{"not":{}}}}')],
             None, "chat.tools[0].parameters_json_schema"),
            ([pb.Tool(name="f"), pb.Tool(name="f")], None, "chat.tools[1].name"),
            ([pb.Tool(name="f")], pb.ToolChoice(mode=pb.ToolChoice.MODE_NAMED, name="g"), "chat.tool_choice.name")):
        e = rpc_error(lambda: stub.Generate(pb.GenerateRequest(chat=user_chat("hi", tools=tl, tool_choice=tc)),
                                            timeout=10))
        st, fv = bad_request_fields(e) if e else (None, [])
        check(f"bad tools -> INVALID_ARGUMENT {field}", e is not None
              and e.code() == grpc.StatusCode.INVALID_ARGUMENT and fv and fv[0][0] == field,
              f"{e and e.details()} {fv}")
    t_still_serving_simple()

if args.mode == "main":
    for name, fn in [("health", t_health), ("info", t_info), ("generate", t_generate),
                     ("invalid", t_invalid), ("concurrent", t_concurrent), ("cancel", t_cancel),
                     ("still serving", t_still_serving)]:
        run(name, fn)
elif args.mode == "concurrent":
    run("concurrent", t_concurrent)
elif args.mode == "flood":
    run("flood", t_flood)
elif args.mode == "drain":
    run("drain", t_drain)
elif args.mode == "auth":
    run("auth", t_auth)
elif args.mode == "reload":
    run("reload", t_reload)
elif args.mode == "tls":
    run("tls", t_tls)
elif args.mode == "fair":
    run("fair", t_fair)
elif args.mode == "structured":
    run("structured", t_structured)
print(f"{passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
