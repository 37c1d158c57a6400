// Safetensors checkpoints: header validation, streaming reads (single file or sharded), writes, and the f16/bf16
// conversions they need. Works on plain typed arrays; the Llama model wraps them into tensors.
export {
  checkHeaderLength, checkpointError, dtypeSize, isDType, maxHeaderBytes, parseSafetensorsHeader, readSafetensorsHeader,
  type CheckpointError, type DType, type RawArray, type SafetensorsHeader, type TensorEntry,
} from './safetensors/header.js';
export {
  indexFileName, openCheckpoint, openSafetensors, singleFileName,
  type Checkpoint, type ReadOptions, type SafetensorsFile, type TensorInfo,
} from './safetensors/read.js';
export {
  writeSafetensors, writeShardedCheckpoint,
  type ShardedWrite, type TensorData, type TensorToWrite, type WritableDType,
} from './safetensors/write.js';
export {
  bf16ToF32, bf16ToF32Array, f16ToF32, f16ToF32Array, f32ToBf16, f32ToBf16Array, f32ToF16, f32ToF16Array,
} from './safetensors/halfFloat.js';
