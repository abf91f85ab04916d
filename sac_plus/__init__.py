"""sac_plus: Soft Actor-Critic for Box and Discrete actions that plugs into Stable-Baselines3."""

from sac_plus.buffers import DeviceReplayBuffer
from sac_plus.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, SACPlusPolicy
from sac_plus.sac import SACPlus
from sac_plus.temperature import UpdateSchedule

__version__ = "0.2.0"

__all__ = [
    "CnnPolicy",
    "DeviceReplayBuffer",
    "MlpPolicy",
    "MultiInputPolicy",
    "SACPlus",
    "SACPlusPolicy",
    "UpdateSchedule",
    "__version__",
]
