;; gemm_bench: square gemm repeated on the device, for benchmarks.
;; Input: n, iters and optionally dtype (u32 LE; 0 f32, 1 bf16, 2 f16; A, B
;; and C all of that type). Fills A and B (n×n) with pseudo-random values
;; in [-1, 1) (never zeros), then runs C = A·B `iters` times and returns
;; C[0] as an f32 (reading it waits for every product). The benchmark times the job
;; at two iteration counts; the difference is the cost of the extra gemms.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (type $dtype (enum "f32" "bf16" "f16"))
    (export "dtype" (type $dt (eq $dtype)))
    (export "[static]buffer.create-typed"
      (func (param "dtype" $dt) (param "len" u32) (result (result (own $buffer) (error $ge)))))
    (export "[method]buffer.write"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "data" (list f32))
            (result (result (error $ge)))))
    (export "[method]buffer.read"
      (func (param "self" (borrow $buffer)) (param "offset" u32) (param "len" u32)
            (result (result (list f32) (error $ge)))))
    (export "gemm"
      (func (param "m" u32) (param "n" u32) (param "k" u32) (param "alpha" f32)
            (param "a" (borrow $buffer)) (param "b" (borrow $buffer))
            (param "beta" f32) (param "c" (borrow $buffer))
            (result (result (error $ge)))))))
  (alias export $gpu "buffer" (type $buffer))

  (core module $alloc
    (memory (export "memory") 1)
    (global $heap (mut i32) (i32.const 1024))
    (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
      (local $ptr i32)
      (local.set $ptr
        (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                 (i32.sub (i32.const 0) (local.get $align))))
      (global.set $heap (i32.add (local.get $ptr) (local.get $size)))
      (if (i32.gt_u (global.get $heap) (i32.shl (memory.size) (i32.const 16)))
        (then
          (if (i32.eq (memory.grow (i32.sub (i32.add (i32.shr_u (global.get $heap) (i32.const 16)) (i32.const 1))
                                            (memory.size)))
                      (i32.const -1))
            (then unreachable))))
      (if (local.get $old) (then (memory.copy (local.get $ptr) (local.get $old) (local.get $old_size))))
      (local.get $ptr)))
  (core instance $a (instantiate $alloc))
  (core func $create (canon lower (func $gpu "[static]buffer.create-typed")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $write (canon lower (func $gpu "[method]buffer.write")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $gemm (canon lower (func $gpu "gemm")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "gpu" "create" (func $create (param i32 i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "gemm" (func $gemm (param i32 i32 i32 f32 i32 i32 f32 i32 i32)))
    (global $x (mut i32) (i32.const 0x12345678))
    (data (i32.const 64) "gemm_bench: input: n, iters[, dtype] (u32 LE)")
    ;; Fills count f32s at ptr with xorshift32 values in [-1, 1).
    (func $fill (param $ptr i32) (param $count i32)
      (local $i i32) (local $x i32)
      (local.set $x (global.get $x))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
          (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 13))))
          (local.set $x (i32.xor (local.get $x) (i32.shr_u (local.get $x) (i32.const 17))))
          (local.set $x (i32.xor (local.get $x) (i32.shl (local.get $x) (i32.const 5))))
          (f32.store (i32.add (local.get $ptr) (i32.shl (local.get $i) (i32.const 2)))
            (f32.sub
              (f32.mul (f32.convert_i32_u (i32.shr_u (local.get $x) (i32.const 8)))
                       (f32.const 0x1p-23))
              (f32.const 1)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      (global.set $x (local.get $x)))
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $n i32) (local $iters i32) (local $count i32) (local $scratch i32)
      (local $a i32) (local $b i32) (local $c i32) (local $dtype i32)
      (block $gpu_failed
        (block $bad_input
          (if (i32.eq (local.get $len) (i32.const 12))
            (then (local.set $dtype (i32.load offset=8 (local.get $in))))
            (else (br_if $bad_input (i32.ne (local.get $len) (i32.const 8)))))
          (br_if $bad_input (i32.gt_u (local.get $dtype) (i32.const 2)))
          (local.set $n (i32.load (local.get $in)))
          (local.set $iters (i32.load offset=4 (local.get $in)))
          (br_if $bad_input (i32.eqz (local.get $n)))
          (local.set $count (i32.mul (local.get $n) (local.get $n)))
          (local.set $scratch (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
                                 (i32.shl (local.get $count) (i32.const 2))))
          (call $create (local.get $dtype) (local.get $count) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $a (i32.load (i32.const 4)))
          (call $create (local.get $dtype) (local.get $count) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $b (i32.load (i32.const 4)))
          (call $create (local.get $dtype) (local.get $count) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $c (i32.load (i32.const 4)))
          (call $fill (local.get $scratch) (local.get $count))
          (call $write (local.get $a) (i32.const 0) (local.get $scratch) (local.get $count) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (call $fill (local.get $scratch) (local.get $count))
          (call $write (local.get $b) (i32.const 0) (local.get $scratch) (local.get $count) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (block $done
            (loop $again
              (br_if $done (i32.eqz (local.get $iters)))
              (call $gemm (local.get $n) (local.get $n) (local.get $n) (f32.const 1)
                           (local.get $a) (local.get $b) (f32.const 0) (local.get $c) (i32.const 0))
              (br_if $gpu_failed (i32.load8_u (i32.const 0)))
              (local.set $iters (i32.sub (local.get $iters) (i32.const 1)))
              (br $again)))
          (call $read (local.get $c) (i32.const 0) (i32.const 1) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (i32.load (i32.const 4)))
          (i32.store (i32.const 24) (i32.const 4))
          (return (i32.const 16)))
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 64))
        (i32.store (i32.const 24) (i32.const 45))
        (return (i32.const 16)))
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (i32.load (i32.const 8)))
      (i32.store (i32.const 24) (i32.load (i32.const 12)))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "gpu" (instance
      (export "create" (func $create))
      (export "write" (func $write))
      (export "read" (func $read))
      (export "gemm" (func $gemm))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
