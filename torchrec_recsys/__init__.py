"""torchrec_recsys: sharded DLRM ranker and two-tower retriever on TorchRec."""

__version__ = "0.1.0"
