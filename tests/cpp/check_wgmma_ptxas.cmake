# CTest script: compiles the Hopper forward (csrc/cuda/forward/wgmma/wgmma_launch.cu) for sm_90a with
# ptxas's report and fails where ptxas serialized a wgmma chain (its C7520 note: the warpgroup's
# MMAs then wait for each other, one at a time). A branch on the consumer group in front of the
# MMA loop did that once and cost v0.1 30% without any test failing; this catches it on a
# machine without a GPU. Arguments: -DNVCC=... -DSOURCE=... -DINCLUDE_DIRS=a;b -DOUTPUT=...
set(include_flags "")
foreach(dir IN LISTS INCLUDE_DIRS)
  list(APPEND include_flags "-I${dir}")
endforeach()
execute_process(
  COMMAND "${NVCC}" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a
          -DFUSEDCONV_HAS_SM90A=1 ${include_flags} -Xptxas -v -c "${SOURCE}" -o "${OUTPUT}"
  RESULT_VARIABLE status
  OUTPUT_VARIABLE compile_output
  ERROR_VARIABLE compile_output)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "nvcc failed on ${SOURCE}:\n${compile_output}")
endif()
if(compile_output MATCHES "C7520")
  message(FATAL_ERROR "ptxas serialized wgmma instructions in ${SOURCE}:\n${compile_output}")
endif()
message(STATUS "no serialized wgmma chains in ${SOURCE}")
