"""Independent-client check of cordon's gRPC API (package cordon.v1), in Python.

Generates stubs from the .proto with grpc_tools.protoc, then drives one approval end to end
as a non-Rust client would:

  1. Alerts.SubmitAlert (ingest token) with the Elastic fixture -> a case
  2. Approvals.ListPending (approver token) -> the case's pending isolate_host request
  3. Approvals.GetApproval -> tier, reasons, deadline, case summary
  4. Approvals.Approve -> outcome "approved", state "approved"
  5. ListPending without credentials (and with bad ones) -> UNAUTHENTICATED
  6. Cases.GetCase -> the isolate_host action is approved

Prints one line per step; exits 0 on success, 1 with a FAIL line on any failed check.
The last line on success is `RESULT case_id=<id> approval_id=<id>` for the caller to verify.

Usage:
  approve_flow.py --proto-dir proto --out-dir /tmp/stubs --addr 127.0.0.1:50051 \
      --token <approver token> --ingest-token <ingest token> \
      --payload tests/fixtures/elastic.json
"""

import argparse
import importlib
import os
import subprocess
import sys
import time

RPC_TIMEOUT = 10.0
# The number of the step under way, for the FAIL line.
CURRENT_STEP = [0]


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


def step(n, text):
    print(f"step {n}: {text}", flush=True)
    CURRENT_STEP[0] = n + 1


def generate_stubs(proto_dir, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        proto_dir,
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        "cordon/v1/cordon.proto",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise CheckFailed(
            f"protoc failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}"
        )
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("cordon.v1.cordon_pb2")
    pb2_grpc = importlib.import_module("cordon.v1.cordon_pb2_grpc")
    return pb2, pb2_grpc


def bearer(token):
    return (("authorization", f"Bearer {token}"),)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proto-dir", required=True, help="directory holding cordon/v1/cordon.proto")
    ap.add_argument("--out-dir", required=True, help="where to generate the Python stubs")
    ap.add_argument("--addr", required=True, help="gRPC address, host:port (plaintext)")
    ap.add_argument("--token", required=True, help="an approver's bearer token (an on-call user)")
    ap.add_argument("--ingest-token", required=True, help="an ingest bearer token")
    ap.add_argument("--payload", required=True, help="the Elastic alert JSON to submit")
    ap.add_argument("--expect-user", default="alice", help="the user the approver token maps to")
    ap.add_argument("--expect-host", default="ws-042", help="the isolate_host target id")
    args = ap.parse_args()

    import grpc  # after argparse so --help works without the venv

    with open(args.payload, "rb") as f:
        payload = f.read()

    pb2, pb2_grpc = generate_stubs(args.proto_dir, args.out_dir)
    step(0, f"generated stubs from {args.proto_dir} into {args.out_dir}")

    channel = grpc.insecure_channel(args.addr)
    try:
        grpc.channel_ready_future(channel).result(timeout=RPC_TIMEOUT)
    except grpc.FutureTimeoutError:
        raise CheckFailed(f"no gRPC server reachable at {args.addr}")
    alerts = pb2_grpc.AlertsStub(channel)
    approvals = pb2_grpc.ApprovalsStub(channel)
    cases = pb2_grpc.CasesStub(channel)
    approver = bearer(args.token)

    # 1. Submit the alert as an ingest caller.
    resp = alerts.SubmitAlert(
        pb2.SubmitAlertRequest(format="elastic", payload=payload),
        metadata=bearer(args.ingest_token),
        timeout=RPC_TIMEOUT,
    )
    check(resp.alert_id, f"SubmitAlert returned no alert_id: {resp}")
    check(resp.case_id, f"SubmitAlert returned no case_id: {resp}")
    check(not resp.duplicate, f"a fresh daemon called the first alert a duplicate: {resp}")
    case_id = resp.case_id
    step(1, f"SubmitAlert ok: alert_id={resp.alert_id} case_id={case_id}")

    # 2. Find the case's pending isolate_host request.
    pending = approvals.ListPending(
        pb2.ListPendingRequest(limit=1000), metadata=approver, timeout=RPC_TIMEOUT
    )
    mine = [
        a
        for a in pending.approvals
        if a.case_id == case_id and a.action == "isolate_host"
    ]
    check(
        len(mine) == 1,
        f"expected one pending isolate_host for case {case_id}, got {len(mine)} among "
        f"{[(a.case_id, a.action, a.target.id) for a in pending.approvals]}",
    )
    approval_id = mine[0].approval_id
    check(
        mine[0].state == "awaiting_approval",
        f"ListPending returned state {mine[0].state!r}",
    )
    step(
        2,
        f"ListPending ok: {len(pending.approvals)} pending, isolate_host "
        f"{mine[0].target.kind}:{mine[0].target.id} approval_id={approval_id}",
    )

    # 3. Inspect it.
    a = approvals.GetApproval(
        pb2.GetApprovalRequest(approval_id=approval_id), metadata=approver, timeout=RPC_TIMEOUT
    )
    now_ms = int(time.time() * 1000)
    check(a.approval_id == approval_id, f"GetApproval returned id {a.approval_id!r}")
    check(a.action == "isolate_host", f"action {a.action!r}")
    check(a.tier == "one_approver", f"tier {a.tier!r}, expected 'one_approver'")
    check(a.state == "awaiting_approval", f"state {a.state!r}")
    check(
        a.target.kind == "host" and a.target.id == args.expect_host,
        f"target {a.target.kind}:{a.target.id}, expected host:{args.expect_host}",
    )
    check(len(a.reasons) > 0 and all(r.strip() for r in a.reasons), f"reasons {list(a.reasons)}")
    check(
        "isolate-host-one-approver" in a.determining_policies,
        f"determining_policies {list(a.determining_policies)}",
    )
    check(
        a.deadline_unix_ms > now_ms,
        f"deadline {a.deadline_unix_ms} is not in the future (now {now_ms})",
    )
    check(
        a.created_unix_ms <= now_ms + 60_000 and a.created_unix_ms < a.deadline_unix_ms,
        f"created {a.created_unix_ms}, deadline {a.deadline_unix_ms}",
    )
    check(a.HasField("case"), "no case summary")
    check(a.case.case_id == case_id, f"case summary is for {a.case.case_id!r}")
    check(a.case.title, "case summary has no title")
    check(a.case.alert_count >= 1, f"case alert_count {a.case.alert_count}")
    check(a.case.severity, "case summary has no severity")
    check(
        f"host:{args.expect_host}" in a.case.entities,
        f"case entities {list(a.case.entities)} lack host:{args.expect_host}",
    )
    check(len(a.request_hash) == 64, f"request_hash {a.request_hash!r}")
    check(
        a.approvals_needed == 1 and a.approvals_given == 0,
        f"approvals needed/given {a.approvals_needed}/{a.approvals_given}",
    )
    check(len(a.evidence) > 0, "no evidence")
    step(
        3,
        f"GetApproval ok: tier={a.tier} reasons={list(a.reasons)} "
        f"deadline_in={(a.deadline_unix_ms - now_ms) // 1000}s case={a.case.title!r} "
        f"severity={a.case.severity}",
    )

    # 4. Approve, bound to the hash just reviewed.
    v = approvals.Approve(
        pb2.VoteRequest(
            approval_id=approval_id,
            request_hash=a.request_hash,
            comment="approved from the Python client test",
        ),
        metadata=approver,
        timeout=RPC_TIMEOUT,
    )
    check(v.outcome == "approved", f"Approve outcome {v.outcome!r}, expected 'approved'")
    check(v.approval.state == "approved", f"state after Approve {v.approval.state!r}")
    votes = [x for x in v.approval.votes if x.user == args.expect_user]
    check(len(votes) == 1, f"votes {[(x.user, x.decision) for x in v.approval.votes]}")
    vote = votes[0]
    check(
        (vote.channel, vote.identity, vote.decision, vote.counted)
        == ("grpc", "token", "approve", True),
        f"vote recorded as {vote}",
    )
    check(v.approval.approvals_given == 1, f"approvals_given {v.approval.approvals_given}")
    step(
        4,
        f"Approve ok: outcome={v.outcome} state={v.approval.state} "
        f"vote={vote.user}/{vote.channel}/{vote.identity}",
    )

    # 5. Unauthenticated (and wrongly authenticated) calls are refused.
    for label, md in [
        ("no credentials", None),
        ("unknown token", bearer("not-a-configured-token")),
    ]:
        try:
            approvals.ListPending(pb2.ListPendingRequest(), metadata=md, timeout=RPC_TIMEOUT)
        except grpc.RpcError as e:
            check(
                e.code() == grpc.StatusCode.UNAUTHENTICATED,
                f"ListPending with {label}: {e.code()} {e.details()!r}, expected UNAUTHENTICATED",
            )
        else:
            raise CheckFailed(f"ListPending with {label} succeeded")
    try:
        approvals.ListPending(
            pb2.ListPendingRequest(), metadata=bearer(args.ingest_token), timeout=RPC_TIMEOUT
        )
    except grpc.RpcError as e:
        check(
            e.code() == grpc.StatusCode.PERMISSION_DENIED,
            f"ListPending with the ingest token: {e.code()}, expected PERMISSION_DENIED",
        )
    else:
        raise CheckFailed("ListPending with the ingest token succeeded")
    step(5, "unauthenticated ListPending refused: UNAUTHENTICATED (ingest token: PERMISSION_DENIED)")

    # 6. The case shows the action approved.
    c = cases.GetCase(pb2.GetCaseRequest(case_id=case_id), metadata=approver, timeout=RPC_TIMEOUT)
    check(c.summary.case_id == case_id, f"GetCase returned case {c.summary.case_id!r}")
    acts = [x for x in c.actions if x.action_id == approval_id]
    check(len(acts) == 1, f"case actions {[(x.action_id, x.action) for x in c.actions]}")
    check(acts[0].action == "isolate_host", f"action {acts[0].action!r}")
    check(acts[0].state == "approved", f"isolate_host state in the case {acts[0].state!r}")
    check(resp.alert_id in c.alert_ids, f"alert {resp.alert_id} not in {list(c.alert_ids)}")
    step(
        6,
        f"GetCase ok: isolate_host {acts[0].target.id} is {acts[0].state}; "
        f"case state {c.summary.state}",
    )

    channel.close()
    print(f"RESULT case_id={case_id} approval_id={approval_id}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except CheckFailed as e:
        print(f"FAIL in step {CURRENT_STEP[0]}: {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # an RPC error or anything unexpected: say which, then fail
        code = getattr(e, "code", None)
        if callable(code):
            print(f"FAIL in step {CURRENT_STEP[0]}: RPC error {e.code()}: {e.details()}", flush=True)
        else:
            print(f"FAIL in step {CURRENT_STEP[0]}: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
