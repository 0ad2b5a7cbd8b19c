# A small multi-derivation project for the demo: three libraries, one of which needs KVM
# and one a "benchmark" machine, and an application that links them together.
# Each build just writes text (the sandbox has no PATH: /bin/cat by its full name).
{ salt ? "demo" }:
let
  step = name: script: attrs: derivation ({
    inherit name salt;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
  } // attrs);
  libparse = step "libparse" "echo 'parse v1' > $out" { };
  libvm = step "libvm" "echo 'vm tests passed' > $out" { requiredSystemFeatures = [ "kvm" ]; };
  perf = step "perf-report" "echo 'perf: 42 ops/s' > $out" { requiredSystemFeatures = [ "benchmark" ]; };
in
step "app" "for f in $libs; do echo \"$f:\"; /bin/cat $f; done > $out; echo 'app linked' >> $out" { libs = [ libparse libvm perf ]; }
