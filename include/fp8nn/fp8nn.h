#pragma once
// fp8nn: FP8 training layers for the PyTorch C++ frontend. Include this one header.

#include <fp8nn/checkpoint.h>
#include <fp8nn/convert.h>
#include <fp8nn/linear.h>
#include <fp8nn/linear_functional.h>
#include <fp8nn/numerics.h>
#include <fp8nn/quantize.h>
#include <fp8nn/recipe.h>
#include <fp8nn/scaled_mm.h>
#include <fp8nn/version.h>
