#pragma once
// Catch2 v3 (split headers) or v2 (single header), chosen by CMake through FP8NN_CATCH2_MAJOR.

#if FP8NN_CATCH2_MAJOR >= 3
#include <catch2/catch_approx.hpp>
#include <catch2/catch_template_test_macros.hpp>
#include <catch2/catch_test_macros.hpp>
#include <catch2/generators/catch_generators.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#else
#include <catch2/catch.hpp>
#endif
