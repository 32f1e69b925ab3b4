import pickle, sys
from collections import Counter
f = sys.argv[1]
m = pickle.load(open(f, "rb"))
tot = Counter(l for labs in m.labels.values() for l in labs)
print(m.name, f"{m.seconds:.1f} s", dict(sorted(tot.items())))
for d in m.dims:
    per = {p: Counter(m.labels[(p, d)]) for p in m.params}
    print(" d", d, {p: dict(sorted(c.items())) for p, c in per.items()})
one = 0; n = 0
for d in m.dims:
    for i in range(m.n_draws):
        n += 1
        one += len({m.labels[(p, d)][i] for p in m.params}) == 1
print(" one label for all params:", one, "of", n)
und = Counter()
for key, regs in m.regimes.items():
    for r, s in zip(regs, m.status[key]):
        if r.kind == "undetermined":
            und["max_steps" if s == "max_steps" else ("still moving" if s == "completed" else str(s))] += 1
print(" undetermined:", dict(und))
st = Counter(str(s) for v in m.status.values() for s in v)
print(" statuses:", dict(st))
# undetermined per d
for d in m.dims:
    print("  undet d", d, [m.labels[(p, d)].count("undetermined") for p in m.params],
          "max_steps", [sum(1 for s in m.status[(p, d)] if s == "max_steps") for p in m.params])
