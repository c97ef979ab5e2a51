;; weights_gemm: multiplies a row vector by a tensor of the function's
;; weights, read where it is resident (on the GPU, or where the weights
;; file is mapped on the CPU backend).
;;
;; Input: the weights' name, the tensor's name (each a u32 LE length then
;; its UTF-8 bytes), then n and k (u32 LE), then x (k little-endian f32).
;; The tensor must be f32 and hold k×n elements (row-major). Output: x·W
;; (n little-endian f32). Any gpu error is returned as the guest's error.
(component
  (import "spillway:runtime/gpu@0.1.0" (instance $gpu
    (export "buffer" (type $buffer (sub resource)))
    (type $error-code (enum "out-of-memory" "invalid-argument" "unknown-kernel" "device"))
    (export "error-code" (type $ec (eq $error-code)))
    (type $gpu-error (record (field "code" $ec) (field "message" string)))
    (export "gpu-error" (type $ge (eq $gpu-error)))
    (export "[static]buffer.create"
      (func (param "len" u32) (result (result (own $buffer) (error $ge)))))
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
            (result (result (error $ge)))))
    (export "weights"
      (func (param "weights" string) (param "tensor" string)
            (result (result (own $buffer) (error $ge)))))))
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
  (core func $create (canon lower (func $gpu "[static]buffer.create")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $write (canon lower (func $gpu "[method]buffer.write")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $read (canon lower (func $gpu "[method]buffer.read")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $gemm (canon lower (func $gpu "gemm")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $weights (canon lower (func $gpu "weights")
    (memory $a "memory") (realloc (func $a "cabi_realloc"))))
  (core func $drop (canon resource.drop $buffer))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "gpu" "create" (func $create (param i32 i32)))
    (import "gpu" "write" (func $write (param i32 i32 i32 i32 i32)))
    (import "gpu" "read" (func $read (param i32 i32 i32 i32)))
    (import "gpu" "gemm" (func $gemm (param i32 i32 i32 f32 i32 i32 f32 i32 i32)))
    (import "gpu" "weights" (func $weights (param i32 i32 i32 i32 i32)))
    (import "gpu" "drop" (func $drop (param i32)))
    (data (i32.const 64) "weights_gemm: input must be two names (u32 LE length, bytes), n, k (u32 LE), then x (k f32)")
    ;; Scratch: imports return through [0, 16), run returns through [16, 28).
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $end i32) (local $at i32)
      (local $wname i32) (local $wlen i32) (local $tname i32) (local $tlen i32)
      (local $n i32) (local $k i32)
      (local $w i32) (local $x i32) (local $out i32)
      (local $ptr i32) (local $count i32) (local $xs i32)
      (local.set $end (i32.add (local.get $in) (local.get $len)))
      (block $gpu_failed
        (block $bad_input
          ;; the weights' name
          (local.set $at (local.get $in))
          (br_if $bad_input (i32.gt_u (i32.add (local.get $at) (i32.const 4)) (local.get $end)))
          (local.set $wlen (i32.load (local.get $at)))
          (local.set $wname (i32.add (local.get $at) (i32.const 4)))
          (br_if $bad_input (i32.gt_u (local.get $wlen) (i32.sub (local.get $end) (local.get $wname))))
          (local.set $at (i32.add (local.get $wname) (local.get $wlen)))
          ;; the tensor's name
          (br_if $bad_input (i32.gt_u (i32.add (local.get $at) (i32.const 4)) (local.get $end)))
          (local.set $tlen (i32.load (local.get $at)))
          (local.set $tname (i32.add (local.get $at) (i32.const 4)))
          (br_if $bad_input (i32.gt_u (local.get $tlen) (i32.sub (local.get $end) (local.get $tname))))
          (local.set $at (i32.add (local.get $tname) (local.get $tlen)))
          ;; n, k, then exactly k f32
          (br_if $bad_input (i32.gt_u (i32.add (local.get $at) (i32.const 8)) (local.get $end)))
          (local.set $n (i32.load (local.get $at)))
          (local.set $k (i32.load offset=4 (local.get $at)))
          (local.set $at (i32.add (local.get $at) (i32.const 8)))
          (br_if $bad_input
            (i64.ne (i64.extend_i32_u (i32.sub (local.get $end) (local.get $at)))
                    (i64.mul (i64.const 4) (i64.extend_i32_u (local.get $k)))))

          (call $weights (local.get $wname) (local.get $wlen) (local.get $tname) (local.get $tlen) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $w (i32.load (i32.const 4)))
          (call $create (local.get $k) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $x (i32.load (i32.const 4)))
          (call $create (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $out (i32.load (i32.const 4)))
          ;; list<f32> must be 4-aligned: copy x where it is.
          (local.set $xs (call $realloc (i32.const 0) (i32.const 0) (i32.const 4)
                                       (i32.shl (local.get $k) (i32.const 2))))
          (memory.copy (local.get $xs) (local.get $at) (i32.shl (local.get $k) (i32.const 2)))
          (call $write (local.get $x) (i32.const 0) (local.get $xs) (local.get $k) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))

          ;; out (1×n) = x (1×k) · W (k×n)
          (call $gemm (i32.const 1) (local.get $n) (local.get $k) (f32.const 1)
                       (local.get $x) (local.get $w) (f32.const 0) (local.get $out) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))

          (call $read (local.get $out) (i32.const 0) (local.get $n) (i32.const 0))
          (br_if $gpu_failed (i32.load8_u (i32.const 0)))
          (local.set $ptr (i32.load (i32.const 4)))
          (local.set $count (i32.load (i32.const 8)))
          (call $drop (local.get $w))
          (call $drop (local.get $x))
          (call $drop (local.get $out))

          ;; ok(list<u8>): the f32 elements are already little-endian bytes.
          (i32.store8 (i32.const 16) (i32.const 0))
          (i32.store (i32.const 20) (local.get $ptr))
          (i32.store (i32.const 24) (i32.shl (local.get $count) (i32.const 2)))
          (return (i32.const 16)))
        ;; bad input: err(the usage string)
        (i32.store8 (i32.const 16) (i32.const 1))
        (i32.store (i32.const 20) (i32.const 64))
        (i32.store (i32.const 24) (i32.const 91))
        (return (i32.const 16)))
      ;; a gpu call failed: err(its gpu-error message), at +8 (ptr) and +12 (len).
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
      (export "gemm" (func $gemm))
      (export "weights" (func $weights))
      (export "drop" (func $drop))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
