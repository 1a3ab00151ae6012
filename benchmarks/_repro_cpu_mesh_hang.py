import os, sys
os.environ["JAX_PLATFORMS"]="cpu"; os.environ.setdefault("JAX_NUM_CPU_DEVICES", "4")
import jax, numpy as np, rollax
if os.environ.get("GLOO"): jax.config.update("jax_cpu_collectives_implementation", "gloo")
from jax.sharding import NamedSharding, PartitionSpec as P
from rollax.run.program import make_program
from rollax.run.seeds import over_seeds
exp = rollax.load_experiment("cartpole_ppo").replace(budget={"total_steps": 8*32*4, "iterations_per_chunk": 2}, seeds=2, logging={"enabled": False}, parallel={"devices": 4, "seed_devices": 1})
plan, program = make_program(exp)
mesh = program.mesh
state = program.init(exp.seed_list)
variant = sys.argv[1]
def spec(path, x):
    names = [getattr(p, "key", getattr(p, "name", None)) for p in path]
    if names and names[0] == "rollout" and x.ndim >= 2: return NamedSharding(mesh, P("seeds", "data"))
    return NamedSharding(mesh, P("seeds"))
shard = jax.tree_util.tree_map_with_path(spec, jax.eval_shape(lambda: state))
rep = NamedSharding(mesh, P())
chunk = program._chunk if "constraint" in variant else (lambda s: jax.lax.scan(program._iteration, s, None, length=2))
ins = shard if "shardin" in variant else rep
outs = (shard, rep) if "shardout" in variant else rep
f = jax.jit(over_seeds(chunk, "seeds"), in_shardings=(ins,), out_shardings=outs)
st = jax.device_put(state, ins)
for i in range(2):
    st, out = f(st); jax.block_until_ready(out); print("chunk", i, flush=True)
