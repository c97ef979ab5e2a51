;; uppercase: returns its input with ASCII letters in upper case, and logs
;; how many bytes it changed through the `job` interface.
;;
;; A guest that imports host functions needs its memory and allocator before
;; its own module is instantiated (the host writes into that memory when a
;; lowered import returns a list or string). So memory and `cabi_realloc`
;; live in a small `$alloc` module, instantiated first; the `job` import is
;; lowered against it; the guest module imports all three.
(component
  (import "spillway:runtime/job@0.1.0" (instance $job
    (type $level (enum "trace" "debug" "info" "warn" "error"))
    (export "level" (type $lvl (eq $level)))
    (export "log" (func (param "level" $lvl) (param "message" string)))))

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
  (core func $log (canon lower (func $job "log") (memory $a "memory")))

  (core module $guest
    (import "alloc" "memory" (memory 1))
    (import "alloc" "cabi_realloc" (func $realloc (param i32 i32 i32 i32) (result i32)))
    (import "job" "log" (func $log (param i32 i32 i32)))
    (data (i32.const 64) "uppercase: changed some bytes")
    (func (export "run") (param $in i32) (param $len i32) (result i32)
      (local $out i32) (local $i i32) (local $c i32) (local $changed i32)
      (local.set $out (call $realloc (i32.const 0) (i32.const 0) (i32.const 1) (local.get $len)))
      (block $done
        (loop $next
          (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
          (local.set $c (i32.load8_u (i32.add (local.get $in) (local.get $i))))
          (if (i32.and (i32.ge_u (local.get $c) (i32.const 97)) (i32.le_u (local.get $c) (i32.const 122)))
            (then
              (local.set $c (i32.sub (local.get $c) (i32.const 32)))
              (local.set $changed (i32.add (local.get $changed) (i32.const 1)))))
          (i32.store8 (i32.add (local.get $out) (local.get $i)) (local.get $c))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $next)))
      ;; level 2 = info
      (call $log (i32.const 2) (i32.const 64) (i32.const 29))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $out))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16)))
  (core instance $g (instantiate $guest
    (with "alloc" (instance $a))
    (with "job" (instance (export "log" (func $log))))))

  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $a "memory") (realloc (func $a "cabi_realloc")))))
