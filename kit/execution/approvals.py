"""Approval gates (DESIGN section 6): who may decide, when it is too late, and what a decision does.

Decisions are final: the ledger takes one decision per approval step and refuses a
second. An approval decides for the run at once: an approval marks the step
`approved` (`kit resume` then continues), a rejection ends the run `rejected` with
everything downstream of the gate `skipped`. A waiting approval carries a deadline
(its `timeout`); a decision after it is refused, and the run is ended `rejected`
(reason `timeout`) by the first kit command that looks at it (`expire_overdue`).
"""

from __future__ import annotations

from kit.base.clock import utcnow
from kit.errors import InvalidInput, PermissionDenied
from kit.ledger.audit import AuditEvent
from kit.ledger.ledger import Ledger
from kit.spec.manifest import Workflow
from kit.spec.project import Project


class Approvals:
    def __init__(self, project: Project, ledger: Ledger):
        self.project = project
        self.ledger = ledger

    def decide(
        self, run_id: str, step_id: str, principal: str, reject: bool = False, comment: str | None = None
    ) -> str:
        """Record `principal`'s decision on a waiting approval step, through the policy; the decision."""
        run = self.ledger.run(run_id)
        if run is None:
            raise InvalidInput(f"no run {run_id!r}")
        workflow = self.project.load_workflow(run["manifest"])
        step = workflow.steps.get(step_id)
        if step is None or not step.is_approval:
            gates = ", ".join(s.id for s in workflow.steps.values() if s.is_approval) or "none"
            raise InvalidInput(f"run {run_id}: {step_id!r} is not an approval step (approval steps: {gates})")
        earlier = self.ledger.decision(run_id, step_id)
        if earlier is not None:
            raise InvalidInput(
                f"run {run_id}: step {step_id} was already {earlier['decision']} by {earlier['principal']} "
                f"at {earlier['decided_at']:%Y-%m-%d %H:%M:%S}: decisions are final"
            )
        if self.expire_overdue(run_id):
            raise InvalidInput(
                f"run {run_id}: the approval {step_id} expired (no decision within {step.spec.approval.timeout}); "
                "the run was ended rejected"
            )
        row = self.ledger.step(run_id, step_id)
        if row is None or row["status"] != "waiting":
            found = row["status"] if row else "not reached"
            raise InvalidInput(f"run {run_id}: step {step_id} is not waiting for a decision (it is {found})")
        try:
            self.project.access.check_approver(principal, step.spec.approval.approvers, run["principal"])
        except PermissionDenied as exc:
            self.ledger.audit(AuditEvent(principal, "approval.denied", f"{run_id}/{step_id}", {"reason": exc.message}))
            raise
        decision = "rejected" if reject else "approved"
        event = AuditEvent(principal, f"approval.{decision}", f"{run_id}/{step_id}", {"comment": comment})
        self._record(run_id, workflow, step_id, decision, principal, comment, event)
        return decision

    def expire_overdue(self, run_id: str | None = None) -> list[tuple[str, str]]:
        """End `rejected` every run (or this one) whose waiting approval is past its deadline; what expired."""
        if not self.ledger.exists:
            return []
        expired = []
        for row in self.ledger.expired_approvals(utcnow(), run_id):
            run = self.ledger.run(row["run_id"])
            try:
                workflow = self.project.load_workflow(run["manifest"])
                timeout = workflow.steps[row["step_id"]].spec.approval.timeout
            except (InvalidInput, KeyError):  # the manifest moved or changed: the deadline still holds
                workflow, timeout = None, None
            comment = f"no decision within {timeout}" if timeout else "no decision before its deadline"
            event = AuditEvent("kit", "approval.expired", f"{row['run_id']}/{row['step_id']}", {"timeout": timeout})
            try:
                self._record(row["run_id"], workflow, row["step_id"], "rejected", "kit", comment, event)
            except InvalidInput:  # someone decided first
                continue
            expired.append((row["run_id"], row["step_id"]))
        return expired

    def _record(
        self,
        run_id: str,
        workflow: Workflow | None,
        step_id: str,
        decision: str,
        principal: str,
        comment: str | None,
        event: AuditEvent,
    ) -> None:
        """An approval marks the step approved; a rejection also skips what lies downstream and ends the run."""
        row = {
            "run_id": run_id,
            "step_id": step_id,
            "decision": decision,
            "principal": principal,
            "comment": comment,
            "decided_at": utcnow(),
        }
        if decision == "approved":
            self.ledger.record_decision(row, event, step_status="approved")
            return
        below = workflow.downstream(step_id) if workflow is not None else []
        self.ledger.record_decision(row, event, step_status="rejected", skipped=below, run_status="rejected")
