# Train an ensemble of 4 score networks on one training set, sample each, print ρ.
import jax
from dsmtheory.families.linear_gaussian import LinearGaussian
from dsmtheory.schedules import VPLinear
from dsmtheory.networks import network_config
from dsmtheory.dsm import TrainConfig, train_ensemble, learned_score
from dsmtheory.samplers import sample_ensemble
from dsmtheory.metrics import rule_metrics

family = LinearGaussian.create(mu_x=(0.0,), sigma_r=0.1)        # x ~ N(0,1), y = x + 0.1 ε
schedule = VPLinear()
data = family.sample(jax.random.PRNGKey(0), 2048)               # one training set, n = 2048
config = TrainConfig(network=network_config("mlp", dim=2, width=64), n_steps=1500, lr=3e-3)
keys = jax.random.split(jax.random.PRNGKey(1), 4)               # 4 seeds, one vmapped program
result = train_ensemble(keys, data, schedule, config, family=family)
print("excess loss L - L* per seed:", result.final["excess"])
samples = sample_ensemble(learned_score(result), schedule, jax.random.PRNGKey(2), 2000, 2, n_steps=200)
for i, z in enumerate(samples):
    print(f"seed {i}: rho = {rule_metrics(z, family)['rho']:.2f}")  # the truth has rho = 1
