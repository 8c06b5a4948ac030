// Plays question-app over AG-UI with the protocol's own client: @ag-ui/client's HttpAgent, which checks
// every event against the protocol's schemas and its order rules (a violation rejects the run), and
// EventSchemas from @ag-ui/core, which each received event is parsed with again here.
//
//   node play.mjs '{"url": "http://127.0.0.1:8000/ag-ui", "runs": [RUN, ...], "headers": {...}}'
//
// RUN: {"message": "easy math"} (a user message first), {"forwardedProps": {...}}, {"answer": "..."}
// (resume the pending interrupt with {answer}) or {"hint": true} (resume it with {hint: true}). All runs share one HttpAgent, so one thread.
// Prints one JSON line: {threadId, runs: [{events, result, outcome, interrupts, error, state, messages}]}.
import { HttpAgent, randomUUID } from "@ag-ui/client";
import { EventSchemas } from "@ag-ui/core/schemas";

const config = JSON.parse(process.argv[2]);
const agent = new HttpAgent({ url: config.url, headers: config.headers ?? {}, threadId: config.threadId });
const report = { threadId: agent.threadId, runs: [] };

for (const run of config.runs) {
  const seen = { events: [], invalid: [], result: undefined, outcome: undefined, interrupts: [], error: null };
  if (run.message !== undefined) {
    agent.addMessage({ id: randomUUID(), role: "user", content: run.message });
  }
  const parameters = { forwardedProps: run.forwardedProps ?? {} };
  if (run.answer !== undefined) {
    parameters.resume = agent.pendingInterrupts.map((interrupt) => (
      { interruptId: interrupt.id, status: "resolved", payload: { answer: run.answer } }));
  }
  if (run.hint) {
    parameters.resume = agent.pendingInterrupts.map((interrupt) => (
      { interruptId: interrupt.id, status: "resolved", payload: { hint: true } }));
  }
  if (run.cancel) {
    parameters.resume = agent.pendingInterrupts.map((interrupt) => ({ interruptId: interrupt.id, status: "cancelled" }));
  }
  try {
    const { result } = await agent.runAgent(parameters, {
      onEvent({ event }) {
        const checked = EventSchemas.safeParse(event);
        if (!checked.success) seen.invalid.push({ type: event.type, issues: checked.error.issues });
        seen.events.push(event);
      },
      onRunFinishedEvent(params) {
        seen.outcome = params.outcome;
        if (params.outcome === "interrupt") seen.interrupts = params.interrupts;
      },
    });
    seen.result = result;
  } catch (error) {
    seen.error = { name: error?.name, status: error?.status, message: String(error?.message ?? error) };
  }
  seen.pendingInterrupts = agent.pendingInterrupts;
  seen.state = agent.state;
  seen.messages = agent.messages;
  report.runs.push(seen);
}
process.stdout.write(JSON.stringify(report) + "\n");
