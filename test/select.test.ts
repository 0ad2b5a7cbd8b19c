// The selection function: Nix's eligibility rules, ranking by speed, the local machine
// competing, and the verdicts the daemon understands.
import { buildMachine, localMachine } from "../src/config/records.js";
import { selectMachine, type BuildRequest, type MachineState, type SelectionInput } from "../src/select/select.js";

const x86 = (name: string, extra: Partial<Parameters<typeof buildMachine>[0]> = {}) => buildMachine({ name, systems: ["x86_64-linux"], ...extra });

const localState = { systems: ["x86_64-linux"], features: ["kvm"], maxJobs: 4 };
const request = (extra: Partial<BuildRequest> = {}): BuildRequest => ({ system: "x86_64-linux", requiredFeatures: [], amWilling: false, ...extra });

function select(input: Partial<SelectionInput> & Pick<SelectionInput, "machines">, states: Record<string, MachineState> = {}) {
  return selectMachine({ localState, request: request(), states: new Map(Object.entries(states)), ...input });
}

const codes = (decision: ReturnType<typeof select>) => Object.fromEntries(decision.reasons.map((r) => [r.machine, r.code]));

test("no machines at all: decline-permanently", () => {
  expect(select({ machines: [] }).verdict).toBe("decline-permanently");
});

test("eligibility follows Nix: system, required ⊆ supported ∪ mandatory, mandatory ⊆ required", () => {
  const machines = [
    buildMachine({ name: "arm", systems: ["aarch64-linux"] }),
    x86("plain"),
    x86("kvm", { features: ["kvm"] }),
    x86("bench", { features: ["kvm"], mandatoryFeatures: ["benchmark"] }),
    x86("off", { features: ["kvm"], enabled: false }),
  ];
  const kvm = select({ machines, request: request({ requiredFeatures: ["kvm"] }) });
  expect(kvm.verdict).toBe("accept");
  expect(kvm.candidates.map((m) => m.name)).toEqual(["kvm"]);
  expect(codes(kvm)).toEqual({ arm: "system", plain: "missing-feature", kvm: "chosen", bench: "mandatory-feature", off: "disabled" });
  expect(kvm.reasons.find((r) => r.machine === "plain")!.detail).toContain("lacks required feature kvm");

  const bench = select({ machines, request: request({ requiredFeatures: ["benchmark"] }) });
  expect(bench.candidates.map((m) => m.name)).toEqual(["bench"]);
  const both = select({ machines, request: request({ requiredFeatures: ["benchmark", "kvm"] }) });
  expect(both.candidates.map((m) => m.name)).toEqual(["bench"]);
  expect(select({ machines, request: request({ system: "builtin" }) }).candidates.map((m) => m.name)).toEqual(["arm", "plain", "kvm"]);
});

test("faster machines win, fractional speeds count, ties go to the less busy", () => {
  const machines = [x86("slow", { speed: 1 }), x86("fast", { speed: 1.5, parallelBuilds: 2 }), x86("also-fast", { speed: 1.5, parallelBuilds: 2 })];
  const decision = select({ machines }, { fast: { slotsInUse: 1 }, "also-fast": { slotsInUse: 0 } });
  expect(decision.candidates.map((m) => m.name)).toEqual(["also-fast", "fast", "slow"]);
  expect(codes(decision)).toEqual({ slow: "slower", fast: "slower", "also-fast": "chosen" });
});

test("full slots, overload and unreachable machines are skipped, each with its reason", () => {
  const machines = [x86("full", { speed: 5 }), x86("hot", { speed: 4 }), x86("down", { speed: 3 }), x86("ok"), x86("calm", { overloadThreshold: null })];
  const decision = select(
    { machines },
    {
      full: { slotsInUse: 1 },
      hot: { slotsInUse: 0, load: 0.95 },
      down: { slotsInUse: 0, unreachable: "connection refused" },
      calm: { slotsInUse: 0, load: 3 },
    },
  );
  // calm ignores load (threshold null) but at equal speed the idle machine still ranks first.
  expect(codes(decision)).toEqual({ full: "slots-full", hot: "overloaded", down: "unreachable", ok: "chosen", calm: "slower" });
  expect(decision.reasons.find((r) => r.machine === "hot")!.detail).toBe("overloaded: load 0.95 per CPU > threshold 0.8");
});

test("none eligible: decline, so the daemon builds locally or says what is required", () => {
  const decision = select({ machines: [buildMachine({ name: "arm", systems: ["aarch64-linux"] })] });
  expect(decision.verdict).toBe("decline");
  expect(decision.summary).toBe("no configured machine can build x86_64-linux");
});

test("all busy: postpone unless the local machine can take it now", () => {
  const machines = [x86("a")];
  const busy = { a: { slotsInUse: 1 } };
  expect(select({ machines, request: request({ amWilling: false }) }, busy).verdict).toBe("postpone");
  expect(select({ machines, request: request({ amWilling: true }) }, busy).verdict).toBe("decline");
  // The local machine cannot build aarch64, so even with free local slots we wait.
  const arm = [buildMachine({ name: "arm", systems: ["aarch64-linux"] })];
  expect(select({ machines: arm, request: request({ system: "aarch64-linux", amWilling: true }) }, { arm: { slotsInUse: 1 } }).verdict).toBe("postpone");
});

test("every machine with a free slot overloaded: build on the least loaded, never wait for other work to end", () => {
  const machines = [x86("hot", { speed: 2 }), x86("warm"), x86("full")];
  const states = { hot: { slotsInUse: 0, load: 1.5 }, warm: { slotsInUse: 0, load: 0.9 }, full: { slotsInUse: 1 } };
  const decision = select({ machines }, states);
  expect(decision.verdict).toBe("accept");
  expect(decision.despiteLoad).toBe(true);
  expect(decision.candidates.map((m) => m.name)).toEqual(["warm", "hot"]);
  expect(decision.summary).toBe(
    "every machine for x86_64-linux is busy or overloaded; building on warm, the least loaded (load 0.90 per CPU), rather than waiting for other work to end",
  );
  // A machine under its threshold still wins, and a free local slot comes before an overloaded machine.
  expect(select({ machines: [...machines, x86("calm")] }, states).candidates.map((m) => m.name)).toEqual(["calm"]);
  expect(select({ machines, request: request({ amWilling: true }) }, states).verdict).toBe("decline");
  // Only full machines left: wait for a slot, as before.
  expect(select({ machines: [x86("full")] }, states).verdict).toBe("postpone");
});

test("all eligible machines unreachable: decline at once instead of waiting forever", () => {
  const decision = select({ machines: [x86("a"), x86("b")] }, { a: { slotsInUse: 0, unreachable: "timeout" }, b: { slotsInUse: 0, unreachable: "refused" } });
  expect(decision.verdict).toBe("decline");
  expect(decision.summary).toContain("unreachable");
});

test("the local machine competes when machines.ts declares it", () => {
  const machines = [x86("remote", { speed: 2 })];
  const willing = request({ amWilling: true });
  // Without a localMachine() record remote machines are preferred, as in Nix.
  expect(select({ machines, request: willing }).verdict).toBe("accept");
  // A faster local machine with a free slot keeps the build.
  const fast = select({ machines, local: localMachine({ speed: 3 }), request: willing });
  expect(fast.verdict).toBe("decline");
  expect(codes(fast)).toEqual({ remote: "local-better" });
  // Equal speed: local wins (no transfer cost).
  expect(select({ machines, local: localMachine({ speed: 2 }), request: willing }).verdict).toBe("decline");
  // Slower local machine: offload.
  expect(select({ machines, local: localMachine({ speed: 1 }), request: willing }).verdict).toBe("accept");
  // No free local slot: offload.
  expect(select({ machines, local: localMachine({ speed: 3 }), request: request({ amWilling: false }) }).verdict).toBe("accept");
  // The local machine lacks a required feature: offload.
  const withFeature = [x86("remote", { speed: 2, features: ["big-parallel"] })];
  expect(
    select({ machines: withFeature, local: localMachine({ speed: 3 }), request: request({ amWilling: true, requiredFeatures: ["big-parallel"] }) }).verdict,
  ).toBe("accept");
  // localMachine({ features }) overrides the daemon's system-features.
  expect(
    select({
      machines: withFeature,
      local: localMachine({ speed: 3, features: ["big-parallel"] }),
      request: request({ amWilling: true, requiredFeatures: ["big-parallel"] }),
    }).verdict,
  ).toBe("decline");
  // max-jobs = 0: the daemon never builds locally.
  expect(select({ machines, local: localMachine({ speed: 3 }), request: willing, localState: { ...localState, maxJobs: 0 } }).verdict).toBe("accept");
  // Disabled local record: no competition.
  expect(select({ machines, local: localMachine({ speed: 3, enabled: false }), request: willing }).verdict).toBe("accept");
});

test("a per-build restriction limits or excludes machines", () => {
  const machines = [x86("a", { speed: 3 }), x86("b", { speed: 2 }), x86("c")];
  const only = select({ machines, restriction: { only: ["b", "c"] } });
  expect(only.candidates.map((m) => m.name)).toEqual(["b", "c"]);
  expect(codes(only).a).toBe("excluded");
  const exclude = select({ machines, restriction: { exclude: ["a"] } });
  expect(exclude.candidates.map((m) => m.name)).toEqual(["b", "c"]);
});

test("with a known duration, a long build waits for a busy fast machine rather than start on a slow one", () => {
  const machines = [x86("fast", { speed: 4 }), x86("slow", { speed: 1, parallelBuilds: 4 })];
  const fastBusy = (freeIn: number | undefined) => ({ fast: { slotsInUse: 1, freeIn } });
  // 600 s at speed 1: 600 s on slow now, or (20 + 150) s on fast: waiting wins clearly.
  const long = select({ machines, estimate: 600 }, fastBusy(20));
  expect(long.verdict).toBe("postpone");
  expect(long.summary).toBe("waiting for fast: expected done in 170 s there, 600 s on slow");
  // 20 s at speed 1: 20 s on slow now beats (20 + 5) s on fast.
  expect(select({ machines, estimate: 20 }, fastBusy(20)).verdict).toBe("accept");
  // No recorded duration, or no idea when fast frees up: never wait.
  expect(select({ machines }, fastBusy(20)).verdict).toBe("accept");
  expect(select({ machines, estimate: 600 }, fastBusy(undefined)).verdict).toBe("accept");
  // Waiting must halve the expected finish: 300 s on slow vs (100 + 75) s on fast is not enough.
  expect(select({ machines, estimate: 300 }, fastBusy(100)).verdict).toBe("accept");
  // The daemon only asks again after its poll interval.
  expect(select({ machines, estimate: 100, pollInterval: 60 }, fastBusy(0)).verdict).toBe("accept");
  expect(select({ machines, estimate: 100, pollInterval: 5 }, fastBusy(0)).verdict).toBe("postpone");
  // A machine that could not build it anyway is never waited for.
  const kvmOnly = [x86("fast", { speed: 4, mandatoryFeatures: ["kvm"] }), x86("slow", { speed: 1 })];
  expect(select({ machines: kvmOnly, estimate: 600 }, fastBusy(20)).verdict).toBe("accept");
});
