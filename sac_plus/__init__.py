"""sac_plus: Soft Actor-Critic for Box and Discrete actions that plugs into Stable-Baselines3."""

from sac_plus.buffers import DeviceReplayBuffer
from sac_plus.policies import CnnPolicy, CrossQPolicy, MlpPolicy, MultiInputPolicy, SACPlusPolicy, SimbaPolicy
from sac_plus.sac import SACPlus
from sac_plus.temperature import UpdateSchedule

__version__ = "0.2.0"

__all__ = [
    "CnnPolicy",
    "CrossQPolicy",
    "DeviceReplayBuffer",
    "MlpPolicy",
    "MultiInputPolicy",
    "SACPlus",
    "SACPlusPolicy",
    "SimbaPolicy",
    "UpdateSchedule",
    "__version__",
]
