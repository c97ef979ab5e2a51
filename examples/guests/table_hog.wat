;; table_hog (hostile): grows a funcref table by 10,000 elements at a time,
;; forever. The host's table limit must stop it with a typed failure, and
;; the host must be unaffected.
(component
  (core module $guest
    (memory (export "memory") 1)
    (table $t 1 funcref)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (loop $more
        ;; -1 where the host refuses without trapping: a hog asks anyway.
        (drop (table.grow $t (ref.null func) (i32.const 10000)))
        (br $more))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
