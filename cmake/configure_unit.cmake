# configure_unit.cmake — writes systemd/mapsaged.service.in with the paths of an install
# prefix: @PREFIX@, @BINDIR@ and @DOCDIR@, and nothing else (the unit's own @-words, such as
# SystemCallFilter=@system-service, stay). Run at configure time for the build tree's copy
# (which tests rate) and at install time, when CMAKE_INSTALL_PREFIX is the prefix really
# installed into (`cmake --install --prefix`, or /usr when cpack builds the package).
# In: UNIT_TEMPLATE, UNIT_OUTPUT, UNIT_PREFIX.
file(READ "${UNIT_TEMPLATE}" unit)
string(REPLACE "@PREFIX@" "${UNIT_PREFIX}" unit "${unit}")
string(REPLACE "@BINDIR@" "${UNIT_PREFIX}/bin" unit "${unit}")
string(REPLACE "@DOCDIR@" "${UNIT_PREFIX}/share/doc/mapsage" unit "${unit}")
file(WRITE "${UNIT_OUTPUT}" "${unit}")
