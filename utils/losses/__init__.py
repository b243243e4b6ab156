"""The training losses: the seed's HashNetLoss with its continuation, and the authors' PairwiseLoss and ScaleTanH
(docs/protocol.md#loss, #paper-recipe)."""
