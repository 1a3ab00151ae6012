"""gymnax's env ids, written out so that listing them (`rollax envs`, the Gymnasium
registration at `import rollax`) imports no gymnax: its package init imports every env family,
matplotlib, seaborn and scipy (about 3 s). `tests/test_startup.py` checks this table against
`gymnax.registered_envs`."""

GYMNAX_IDS = (
    "CartPole-v1", "Pendulum-v1", "Acrobot-v1", "MountainCar-v0", "MountainCarContinuous-v0",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar",
    "SpaceInvaders-MinAtar",
    "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite", "UmbrellaChain-bsuite",
    "DiscountingChain-bsuite", "SimpleBandit-bsuite",
    "FourRooms-misc", "MetaMaze-misc", "PointRobot-misc", "BernoulliBandit-misc",
    "GaussianBandit-misc", "Reacher-misc", "Swimmer-misc", "Pong-misc", "FrozenLake-misc",
)

# gymnax ids left out because making them downloads data (rollax must run offline):
# id -> why, said by `make`
DOWNLOADING_IDS = {
    "MNISTBandit-bsuite": "gymnax downloads MNIST when it is made, which fails offline",
}
